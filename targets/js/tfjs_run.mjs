// Run a TF.js graph model with @tensorflow/tfjs (pure JS, CPU backend) in Node.
// Usage: node tfjs_run.mjs JOB.json  (written by targets/tfjs.py; same JOB shape as ort_web_run.mjs)
// The model's signature (model.json) maps Shipyard's input/output names to graph nodes.
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';

const TYPED = { float32: Float32Array, int32: Int32Array, bool: Uint8Array };

function fileHandler(modelPath) {
  return {
    load: async () => {
      const json = JSON.parse(fs.readFileSync(modelPath, 'utf8'));
      const dir = path.dirname(modelPath);
      const specs = [];
      const buffers = [];
      for (const group of json.weightsManifest) {
        specs.push(...group.weights);
        for (const p of group.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
      }
      const all = Buffer.concat(buffers);
      return {
        modelTopology: json.modelTopology, weightSpecs: specs, format: json.format,
        generatedBy: json.generatedBy, convertedBy: json.convertedBy, signature: json.signature,
        userDefinedMetadata: json.userDefinedMetadata,
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      };
    },
  };
}

function readTensor(spec) {
  const buf = fs.readFileSync(spec.path);
  // TF.js has no int64: ints travel as int32 (values must fit, as they do for ids and masks).
  if (spec.dtype === 'int64') {
    const big = new BigInt64Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
    return tf.tensor(Int32Array.from(big, (v) => Number(v)), spec.shape, 'int32');
  }
  const Typed = TYPED[spec.dtype];
  if (!Typed) throw new Error(`dtype ${spec.dtype} is not supported by TF.js`);
  const data = new Typed(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  return tf.tensor(data, spec.shape, spec.dtype);
}

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  await tf.setBackend('cpu');
  const runs = [];
  for (const model of job.models) {
    const t0 = performance.now();
    const graph = await tf.loadGraphModel(fileHandler(model.path));
    const loadMs = performance.now() - t0;
    const sig = graph.modelSignature ?? JSON.parse(fs.readFileSync(model.path, 'utf8')).signature;
    const node = (entry) => entry.name.replace(/:0$/, '');
    const outputNodes = job.output_names.map((n) => {
      if (!sig.outputs[n]) throw new Error(`model.json has no output ${n}; has ${Object.keys(sig.outputs)}`);
      return node(sig.outputs[n]);
    });
    const feedsOf = (variant) => Object.fromEntries(variant.inputs.map((s) => {
      if (!sig.inputs[s.name]) throw new Error(`model.json has no input ${s.name}`);
      return [node(sig.inputs[s.name]), readTensor(s)];
    }));
    const run = async (feeds) => {
      const out = await graph.executeAsync(feeds, outputNodes);
      return Array.isArray(out) ? out : [out];
    };
    const outputs = {};
    for (const variant of job.variants) {
      const feeds = feedsOf(variant);
      const result = await run(feeds);
      outputs[variant.name] = await Promise.all(result.map(async (t, i) => {
        const data = await t.data();
        const file = path.join(job.out_dir, `tfjs.${variant.name}.${i}.bin`);
        fs.writeFileSync(file, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
        return { name: job.output_names[i], dtype: t.dtype, shape: t.shape, path: file };
      }));
      tf.dispose([...Object.values(feeds), ...result]);
    }
    const timed = job.variants.find((v) => v.name === job.timed_variant) ?? job.variants[0];
    const feeds = feedsOf(timed);
    tf.dispose(await run(feeds));
    const times = [];
    for (let i = 0; i < job.repeats; i++) {
      const s = performance.now();
      const out = await run(feeds);
      await Promise.all(out.map((t) => t.data()));
      times.push(performance.now() - s);
      tf.dispose(out);
    }
    times.sort((a, b) => a - b);
    runs.push({ file: model.file, load_ms: loadMs, latency_ms_p50: times[Math.floor(times.length / 2)], outputs });
  }
  fs.writeFileSync(job.result_path, JSON.stringify({ runs }));
}

main().catch((err) => {
  process.stderr.write(`${err && err.message ? err.message : err}\n`);
  process.exit(1);
});
