// Prove a web artifact in headless Chromium: a page served from 127.0.0.1 loads the runtime from
// this folder's node_modules and the artifact's own files, runs every variant on each backend and
// hands back outputs and timings.
// Usage: node browser_run.mjs JOB.json  (written by targets/_browser.py; same JOB shape as
// tfjs_run.mjs / ort_web_run.mjs, plus kind ("tfjs" | "ort"), backends, chromium, artifact_dir)
//
// puppeteer-core drives the system Chromium (Debian's package) over the DevTools protocol: it
// ships no browser and downloads none, and it lives in the same node_modules the page loads the
// runtimes from. Only the files named in the job are served (an allowlist, no path lookups).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import puppeteer from 'puppeteer-core';

const require = createRequire(import.meta.url);
const here = path.dirname(new URL(import.meta.url).pathname);
const TYPES = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.html': 'text/html' };

function runtimeFiles(kind) {
  const files = {};
  const add = (url, file) => { files[url] = file; };
  if (kind === 'tfjs') {
    const dist = path.dirname(require.resolve('@tensorflow/tfjs/dist/tf.min.js'));
    add('/js/tf.min.js', path.join(dist, 'tf.min.js'));
    const wasm = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
    add('/js/tf-backend-wasm.min.js', path.join(wasm, 'tf-backend-wasm.min.js'));
    for (const f of fs.readdirSync(wasm).filter((f) => f.endsWith('.wasm'))) add(`/js/${f}`, path.join(wasm, f));
  } else {
    const dist = path.dirname(require.resolve('onnxruntime-web'));
    for (const f of fs.readdirSync(dist).filter((f) => /^ort(\.wasm)?\.min\.js$|^ort-wasm.*\.(wasm|mjs)$/.test(f))) {
      add(`/js/${f}`, path.join(dist, f));
    }
  }
  add('/page.js', path.join(here, 'browser_page.js'));
  return files;
}

function serve(files) {
  const server = http.createServer((req, res) => {
    let url;
    try {
      url = decodeURIComponent(new URL(req.url, 'http://127.0.0.1').pathname);
    } catch {
      res.writeHead(400); res.end(); return;
    }
    const headers = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' };
    if (url === '/') {
      res.writeHead(200, { ...headers, 'Content-Type': 'text/html' });
      res.end('<!doctype html><meta charset=utf-8><title>shipyard harness</title><body>');
      return;
    }
    const file = files[url];
    if (!file) { res.writeHead(404, headers); res.end(); return; }
    res.writeHead(200, { ...headers, 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream' });
    fs.createReadStream(file).on('error', () => res.destroy()).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// What puppeteer.launch would write to and read from Chromium's fds 3 and 4 (the DevTools pipe):
// messages are JSON, each ended by a NUL byte.
class PipeTransport {
  constructor(write, read) {
    this.write = write;
    this.pending = [];
    this.onmessage = undefined;
    this.onclose = undefined;
    read.on('data', (chunk) => this.dispatch(chunk));
    read.on('close', () => this.onclose?.());
    read.on('error', () => {});
    write.on('error', () => {});
  }

  dispatch(chunk) {
    this.pending.push(chunk);
    if (chunk.indexOf(0) === -1) return;
    const all = Buffer.concat(this.pending);
    let start = 0;
    for (let end = all.indexOf(0); end !== -1; end = all.indexOf(0, start)) {
      const message = all.toString('utf8', start, end);
      setImmediate(() => this.onmessage?.(message));
      start = end + 1;
    }
    this.pending = start < all.length ? [all.subarray(start)] : [];
  }

  send(message) {
    this.write.write(message);
    this.write.write('\0');
  }

  close() {
    this.write.end();
  }
}

// puppeteer.launch starts Chromium detached (a process group of its own), where killing the step's
// group would miss it. Started here, it stays in this process's group, so a step killed for its
// timeout takes the browser with it; the pipe also ends it when this process dies alone. Its
// profile lives in the step's scratch.
async function launchInThisGroup(job) {
  const args = await puppeteer.defaultArgs({
    headless: true,
    userDataDir: path.join(job.out_dir, 'chromium-profile'),
    // --no-sandbox: CI runs as root, where Chromium refuses its sandbox. SwiftShader gives
    // WebGL a software GPU on machines without one.
    args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'],
  });
  const chromium = spawn(job.chromium, [...args, '--remote-debugging-pipe'], {
    detached: false,
    stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  chromium.stderr.on('data', (d) => { stderr = (stderr + d).slice(-2000); });
  const exited = new Promise((resolve) => chromium.once('exit', resolve));
  const transport = new PipeTransport(chromium.stdio[3], chromium.stdio[4]);
  const connected = puppeteer.connect({ transport, protocolTimeout: 0, defaultViewport: { width: 800, height: 600 } });
  const browser = await Promise.race([
    connected,
    exited.then((code) => { throw new Error(`Chromium exited (${code}) before it answered: ${stderr.trim().split('\n').pop()}`); }),
  ]);
  return { browser, chromium };
}

async function main() {
  const job = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const files = runtimeFiles(job.kind);
  for (const f of job.artifact_files) files[`/artifact/${f}`] = path.join(job.artifact_dir, f);
  for (const v of job.variants) for (const s of v.inputs) files[`/inputs/${path.basename(s.path)}`] = s.path;
  const server = await serve(files);
  const origin = `http://127.0.0.1:${server.address().port}`;
  const { browser, chromium } = await launchInThisGroup(job);
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${origin}/`);
    const version = await browser.version();
    const pageJob = {
      kind: job.kind,
      model: `/artifact/${job.models[0].file}`,
      file: job.models[0].file,  // the file the page loads (model.json / model.onnx)
      external_data: job.models[0].external_data.map((location) => (
        { path: location, url: `/artifact/${location.split('/').map(encodeURIComponent).join('/')}` })),
      backends: job.backends,
      output_names: job.output_names,
      variants: job.variants.map((v) => ({
        name: v.name,
        inputs: v.inputs.map((s) => ({ name: s.name, dtype: s.dtype, shape: s.shape, url: `/inputs/${path.basename(s.path)}` })),
      })),
      timed_variant: job.timed_variant,
      repeats: job.repeats,
      profile_repeats: job.profile_repeats,
    };
    await page.addScriptTag({ url: '/page.js' });
    const result = await page.evaluate((j) => window.shipyardRun(j), pageJob);
    if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
    const runs = result.runs.map((run) => {
      const outputs = {};
      for (const [variant, tensors] of Object.entries(run.outputs)) {
        outputs[variant] = tensors.map((t, i) => {
          const file = path.join(job.out_dir, `browser-${run.backend}.${variant}.${i}.bin`);
          fs.writeFileSync(file, Buffer.from(t.b64, 'base64'));
          return { name: t.name, dtype: t.dtype, shape: t.shape, path: file };
        });
      }
      return {
        file: run.file, runtime: `Chromium ${run.label}`,
        backend: run.backend, load_ms: run.load_ms, times_ms: run.times_ms, profile_ms: run.profile_ms, outputs,
      };
    });
    fs.writeFileSync(job.result_path, JSON.stringify({ runs, browser: version, cross_origin_isolated: result.isolated }));
  } finally {
    await browser.close().catch(() => chromium.kill('SIGKILL'));
    server.close();
  }
}

main().catch((err) => {
  process.stderr.write(`harness error: ${err?.message ?? err}\n`);  // marked: the caller puts it first
  process.exit(1);
});
