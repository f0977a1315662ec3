// Run ONNX / ORT-format models in onnxruntime-web's wasm backend, as a browser would.
// Usage: node ort_web_run.mjs JOB.json  (written by targets/ort_web.py)
// JOB: {models: [{file, path, external_data: [location]}], variants: [{name, inputs: [{name, dtype, shape, path}]}],
//       timed_variant, repeats, out_dir, result_path}
// Writes raw little-endian output tensors to out_dir and the result JSON (raw timings) to result_path.
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-web';

ort.env.wasm.numThreads = 1;

const TYPED = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
  int16: Int16Array, int32: Int32Array, int64: BigInt64Array, bool: Uint8Array,
};

function readTensor(spec) {
  const buf = fs.readFileSync(spec.path);
  const Typed = TYPED[spec.dtype];
  if (!Typed) throw new Error(`dtype ${spec.dtype} is not supported by the harness`);
  const data = new Typed(buf.buffer, buf.byteOffset, buf.byteLength / Typed.BYTES_PER_ELEMENT);
  return new ort.Tensor(spec.dtype, data.slice(), spec.shape);
}

function feedsOf(variant) {
  return Object.fromEntries(variant.inputs.map((s) => [s.name, readTensor(s)]));
}

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const runs = [];
  for (const model of job.models) {
    const bytes = fs.readFileSync(model.path);
    // weights kept outside the .onnx, by the name the model gives them; given as paths, which
    // onnxruntime-web streams when they are past Node's 2 GiB readFile limit
    const externalData = (model.external_data ?? []).map((location) => (
      { path: location, data: path.join(path.dirname(model.path), location) }));
    const t0 = performance.now();
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], externalData });
    const loadMs = performance.now() - t0;
    const outputs = {};
    for (const variant of job.variants) {
      const result = await session.run(feedsOf(variant));
      outputs[variant.name] = session.outputNames.map((name, i) => {
        const t = result[name];
        const file = path.join(job.out_dir, `${model.file.replace(/\W/g, '_')}.${variant.name}.${i}.bin`);
        const data = t.data;
        fs.writeFileSync(file, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
        return { name, dtype: t.type, shape: t.dims, path: file };
      });
    }
    const timed = job.variants.find((v) => v.name === job.timed_variant) ?? job.variants[0];
    const feeds = feedsOf(timed);
    await session.run(feeds);
    const timedRuns = async (f, n) => {
      const times = [];
      for (let i = 0; i < n; i++) {
        const s = performance.now();
        await session.run(f);
        times.push(performance.now() - s);
      }
      return times;
    };
    const times = await timedRuns(feeds, job.repeats);
    const profile = {};  // batch profiling: every other variant, fewer runs
    for (const v of job.variants.filter((v) => v !== timed)) profile[v.name] = await timedRuns(feedsOf(v), job.profile_repeats);
    runs.push({ file: model.file, runtime: 'onnxruntime-web wasm', load_ms: loadMs, times_ms: times, profile_ms: profile, outputs });
    await session.release();
  }
  fs.writeFileSync(job.result_path, JSON.stringify({ runs }));
}

main().catch((err) => {
  // marked, so the caller puts the reason before whatever the libraries warned about
  process.stderr.write(`harness error: ${err && err.message ? err.message : err}\n`);
  process.exit(1);
});
