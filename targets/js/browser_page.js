// The harness page's script (served by browser_run.mjs): load the runtime, run every variant on
// each backend, return outputs (base64, little-endian) and timings. Runs in Chromium, not Node.
(() => {
  const TYPED = {
    float32: Float32Array, float64: Float64Array, int32: Int32Array, int64: BigInt64Array,
    int8: Int8Array, uint8: Uint8Array, bool: Uint8Array,
  };

  function loadScript(url) {
    return new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = url;
      s.onload = resolve;
      s.onerror = () => reject(new Error(`cannot load ${url}`));
      document.head.appendChild(s);
    });
  }

  async function bytes(url) {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
    return new Uint8Array(await res.arrayBuffer());
  }

  function b64(typed) {
    const u8 = new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
    let s = '';
    for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode(...u8.subarray(i, i + 0x8000));
    return btoa(s);
  }

  // The typical variant's timed runs, and fewer of every other one (batch profiling). Inputs
  // are built once per variant, outside the timed runs, as in the Node harnesses.
  async function timed(job, makeFeeds, runFeeds, freeFeeds) {
    const variant = job.variants.find((v) => v.name === job.timed_variant) ?? job.variants[0];
    const runs = async (v, n, warm) => {
      const feeds = await makeFeeds(v);
      if (warm) await runFeeds(feeds);
      const times = [];
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        await runFeeds(feeds);
        times.push(performance.now() - t0);
      }
      freeFeeds(feeds);
      return times;
    };
    const times = await runs(variant, job.repeats, true);
    const profile = {};
    for (const v of job.variants.filter((v) => v !== variant)) profile[v.name] = await runs(v, job.profile_repeats, false);
    return { times, profile };
  }

  // TF.js ---------------------------------------------------------------------------------------
  async function tfjsInput(spec) {
    const raw = await bytes(spec.url);
    if (spec.dtype === 'int64') {  // TF.js has no int64: ids travel as int32, as in Node
      const big = new BigInt64Array(raw.buffer);
      return tf.tensor(Int32Array.from(big, (v) => Number(v)), spec.shape, 'int32');
    }
    const Typed = TYPED[spec.dtype];
    return tf.tensor(new Typed(raw.buffer), spec.shape, spec.dtype);
  }

  async function tfjsOn(backend, job) {
    if (!(await tf.setBackend(backend))) throw new Error(`TF.js backend ${backend} is not available in this browser`);
    await tf.ready();
    const t0 = performance.now();
    const model = await tf.loadGraphModel(job.model);
    const loadMs = performance.now() - t0;
    const sig = model.modelSignature;
    const node = (e) => e.name.replace(/:0$/, '');
    const outputNodes = job.output_names.map((n) => node(sig.outputs[n]));
    const outputs = {};
    const makeFeeds = async (variant) => {
      const feeds = {};
      for (const s of variant.inputs) feeds[node(sig.inputs[s.name])] = await tfjsInput(s);
      return feeds;
    };
    const runFeeds = async (feeds) => {
      const out = await model.executeAsync(feeds, outputNodes);
      const list = Array.isArray(out) ? out : [out];
      const datas = await Promise.all(list.map((t) => t.data()));
      const kept = list.map((t, i) => ({ name: job.output_names[i], dtype: t.dtype, shape: t.shape, data: datas[i] }));
      tf.dispose(list);
      return kept;
    };
    const freeFeeds = (feeds) => tf.dispose(Object.values(feeds));
    for (const v of job.variants) {
      const feeds = await makeFeeds(v);
      outputs[v.name] = (await runFeeds(feeds)).map(({ data, ...t }) => ({ ...t, b64: b64(data) }));
      freeFeeds(feeds);
    }
    const { times, profile } = await timed(job, makeFeeds, runFeeds, freeFeeds);
    model.dispose();
    const flags = backend === 'webgl' ? ` (float32 textures: ${tf.env().getBool('WEBGL_RENDER_FLOAT32_ENABLED')})` : '';
    return { file: job.file, backend: tf.getBackend(), label: `tfjs ${tf.getBackend()}${flags}`, load_ms: loadMs, times_ms: times, profile_ms: profile, outputs };
  }

  // ONNX Runtime Web -----------------------------------------------------------------------------
  async function ortOn(backend, job) {
    ort.env.wasm.wasmPaths = '/js/';
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    const modelBytes = await bytes(job.model);
    // URLs: onnxruntime-web fetches them itself, streaming a file past 1 GB into one buffer
    const externalData = job.external_data.map((d) => ({ path: d.path, data: d.url }));
    const t0 = performance.now();
    const session = await ort.InferenceSession.create(modelBytes, { executionProviders: [backend], externalData });
    const loadMs = performance.now() - t0;
    const outputs = {};
    const makeFeeds = async (variant) => {
      const feeds = {};
      for (const s of variant.inputs) {
        const raw = await bytes(s.url);
        feeds[s.name] = new ort.Tensor(s.dtype, new TYPED[s.dtype](raw.buffer), s.shape);
      }
      return feeds;
    };
    const runFeeds = (feeds) => session.run(feeds);
    for (const v of job.variants) {
      const result = await runFeeds(await makeFeeds(v));
      outputs[v.name] = session.outputNames.map((name) => {
        const t = result[name];
        return { name, dtype: t.type, shape: t.dims, b64: b64(t.data) };
      });
    }
    const { times, profile } = await timed(job, makeFeeds, runFeeds, () => {});
    await session.release();
    const threads = ort.env.wasm.numThreads;
    return { file: job.file, backend, label: `onnxruntime-web ${backend} (${threads} thread${threads > 1 ? 's' : ''})`, load_ms: loadMs, times_ms: times, profile_ms: profile, outputs };
  }

  window.shipyardRun = async (job) => {
    const runs = [];
    if (job.kind === 'tfjs') {
      await loadScript('/js/tf.min.js');
      await loadScript('/js/tf-backend-wasm.min.js');
      tf.wasm.setWasmPaths('/js/');
      for (const backend of job.backends) runs.push(await tfjsOn(backend, job));
    } else {
      await loadScript('/js/ort.min.js');
      for (const backend of job.backends) runs.push(await ortOn(backend, job));
    }
    return { runs, isolated: self.crossOriginIsolated };
  };
})();
