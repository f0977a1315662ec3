// Prove a TF.js graph model in Node: check it is portable to the backends it targets, then run it
// on the cpu and wasm backends.
// Usage: node tfjs_run.mjs JOB.json  (written by targets/tfjs.py; same JOB shape as ort_web_run.mjs,
// plus output_names and backends)
//
// Portability: every graph op must be one the converter runtime maps, every fused activation one
// that each target backend implements, and every kernel the model dispatches (recorded on cpu)
// registered for each target backend. WebGL needs a GPU context, so it is checked, not run, here.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';

const require = createRequire(import.meta.url);
const TYPED = { float32: Float32Array, int32: Int32Array, bool: Uint8Array };

// Fused activations each backend implements in @tensorflow/tfjs 4.22.0 (the same seven in all three):
// cpu   tfjs-backend-cpu/dist/utils/fused_utils.js applyActivation
// webgl tfjs-backend-webgl/dist/kernel_utils/kernel_funcs_utils.js mapActivationToShaderProgram
// wasm  tfjs-backend-wasm/src/kernels/types.ts FusableActivation
const FUSED_ACTIVATIONS_VERSION = '4.22.0';
const SEVEN = ['linear', 'relu', 'relu6', 'elu', 'prelu', 'leakyrelu', 'sigmoid'];
const FUSED_ACTIVATIONS = { cpu: SEVEN, webgl: SEVEN, wasm: SEVEN };
const FUSED_OPS = new Set(['_FusedMatMul', '_FusedConv2D', 'FusedDepthwiseConv2dNative']);
const FUSED_PREFIXES = new Set(['BiasAdd', 'NoOp']);

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

// The TF op names the installed converter runtime maps to TF.js ops, probed with a synthetic graph.
function converterOps(candidates) {
  const node = candidates.map((op, i) => ({ name: `n${i}`, op, input: [], attr: {} }));
  const model = tf.loadGraphModelSync({
    modelTopology: { node, versions: { producer: 1, minConsumer: 0 } },
    weightSpecs: [], weightData: new ArrayBuffer(0),
  });
  const nodes = model.executor.graph.nodes;
  return new Set(candidates.filter((op, i) => nodes[`n${i}`] && nodes[`n${i}`].category));
}

function graphNodes(doc) {
  const functions = doc.modelTopology.library?.function ?? [];
  return [...(doc.modelTopology.node ?? []), ...functions.flatMap((f) => f.nodeDef ?? [])];
}

function decode(b64) {
  return Buffer.from(b64, 'base64').toString('utf8');
}

// Static part of the gate: ops and fused activations. Returns a list of problems.
function staticProblems(doc, backends) {
  const problems = [];
  const nodes = graphNodes(doc);
  const supported = converterOps([...new Set(nodes.map((n) => n.op))]);
  for (const node of nodes) {
    if (!supported.has(node.op)) {
      problems.push(`op ${node.op} (node ${node.name}) is not supported by the TF.js ${tf.version_converter} converter runtime`);
      continue;
    }
    if (!FUSED_OPS.has(node.op)) continue;
    const fused = (node.attr?.fused_ops?.list?.s ?? []).map(decode);
    if (fused.length > 2 || (fused[0] && !FUSED_PREFIXES.has(fused[0]))) {
      problems.push(`node ${node.name} (${node.op}) fuses [${fused}], which TF.js cannot run`);
      continue;
    }
    const activation = (fused[1] ?? 'linear').toLowerCase();
    const missing = backends.filter((b) => !FUSED_ACTIVATIONS[b].includes(activation));
    if (missing.length) {
      problems.push(`node ${node.name} (${node.op}) fuses activation ${activation}, which backend(s) ${missing.join(', ')} do not implement`);
    }
  }
  return problems;
}

// Record every kernel the engine dispatches while `fn` runs.
async function recordKernels(fn) {
  const engine = tf.engine();
  const original = engine.runKernel;
  const kernels = new Set();
  engine.runKernel = function (name, inputs, attrs) {
    kernels.add(name);
    return original.call(this, name, inputs, attrs);
  };
  try {
    await fn();
  } finally {
    engine.runKernel = original;
  }
  return kernels;
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

async function runOn(backend, model, job) {
  await tf.setBackend(backend);
  await tf.ready();
  const t0 = performance.now();
  const graph = await tf.loadGraphModel(fileHandler(model.path));
  const loadMs = performance.now() - t0;
  const sig = graph.modelSignature;
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
      const file = path.join(job.out_dir, `tfjs-${backend}.${variant.name}.${i}.bin`);
      fs.writeFileSync(file, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      return { name: job.output_names[i], dtype: t.dtype, shape: t.shape, path: file };
    }));
    tf.dispose([...Object.values(feeds), ...result]);
  }
  const timed = job.variants.find((v) => v.name === job.timed_variant) ?? job.variants[0];
  const timedRuns = async (variant, n) => {
    const feeds = feedsOf(variant);
    const times = [];
    for (let i = 0; i < n; i++) {
      const s = performance.now();
      const out = await run(feeds);
      await Promise.all(out.map((t) => t.data()));
      times.push(performance.now() - s);
      tf.dispose(out);
    }
    tf.dispose(Object.values(feeds));
    return times;
  };
  await timedRuns(timed, 1);  // warm-up
  const times = await timedRuns(timed, job.repeats);
  const profile = {};  // batch profiling: every other variant, fewer runs
  for (const v of job.variants.filter((v) => v !== timed)) profile[v.name] = await timedRuns(v, job.profile_repeats);
  graph.dispose();
  return { file: model.file, runtime: `tfjs ${backend}`, load_ms: loadMs, times_ms: times, profile_ms: profile, outputs };
}

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const backends = job.backends;
  setWasmPaths(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm')) + '/');
  const model = job.models[0];
  const doc = JSON.parse(fs.readFileSync(model.path, 'utf8'));
  const problems = tf.version.tfjs === FUSED_ACTIVATIONS_VERSION ? staticProblems(doc, backends)
    : [`the fused-activation table is for @tensorflow/tfjs ${FUSED_ACTIVATIONS_VERSION}, installed is ${tf.version.tfjs}`];
  const runs = [];
  if (problems.length === 0) {
    let cpuRun;
    const kernels = await recordKernels(async () => { cpuRun = await runOn('cpu', model, job); });
    runs.push(cpuRun);
    for (const backend of backends) {
      const missing = [...kernels].filter((k) => !tf.getKernel(k, backend));
      if (missing.length) problems.push(`backend ${backend} has no kernel for ${missing.join(', ')}`);
    }
    if (problems.length === 0 && backends.includes('wasm')) runs.push(await runOn('wasm', model, job));
  }
  const checks = [{
    name: 'portability',
    passed: problems.length === 0,
    detail: problems.length ? problems.join('; ') : `ops, fused activations and kernels implemented by ${backends.join(', ')}`,
  }];
  fs.writeFileSync(job.result_path, JSON.stringify({ runs, checks }));
}

main().catch((err) => {
  // marked, so the caller puts the reason before whatever the libraries warned about
  process.stderr.write(`harness error: ${err && err.message ? err.message : err}\n`);
  process.exit(1);
});
