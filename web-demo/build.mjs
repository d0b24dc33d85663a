// Builds the browser demo into a directory the gateway serves (GATEWAY_WEB_ROOT): index.html at
// `/`, and the script and the stylesheet under `/static/`, named by their content
// (`app-<HASH>.js`, `style-<HASH>.css`, esbuild's 8-character hash). The gateway caches such
// names for a year as immutable and never caches index.html, which names the current ones: a new
// build is picked up on the next page load, never half old and half new.
//
//   node build.mjs [OUT_DIR]        (default: ../target/web-demo/dist)
//
// The page must keep working under the gateway's Content-Security-Policy (gateway/src/web.rs):
// no inline <script> or style attribute in public/index.html, everything from /static/.

import { build } from "esbuild";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "../target/web-demo/dist"));
mkdirSync(out, { recursive: true });

// Source name in public/index.html -> entry point.
const assets = {
  "/static/app.js": join(here, "src/app.ts"),
  "/static/style.css": join(here, "public/style.css"),
};
const result = await build({
  entryPoints: Object.values(assets),
  entryNames: "[name]-[hash]",
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  logLevel: "warning",
  metafile: true,
  outdir: out,
});

// Each entry point's output file, from the metafile (paths there are relative to the cwd).
const built = new Map();
for (const [output, meta] of Object.entries(result.metafile.outputs)) {
  if (meta.entryPoint) built.set(resolve(meta.entryPoint), basename(output));
}
let html = readFileSync(join(here, "public/index.html"), "utf8");
for (const [reference, entryPoint] of Object.entries(assets)) {
  const name = built.get(entryPoint);
  if (!name) throw new Error(`esbuild wrote no output for ${relative(here, entryPoint)}`);
  const quoted = `"${reference}"`;
  if (!html.includes(quoted)) throw new Error(`public/index.html does not reference ${quoted}`);
  html = html.replaceAll(quoted, `"/static/${name}"`);
}
writeFileSync(join(out, "index.html"), html);

// Earlier builds' assets in the same directory are no longer referenced.
const current = new Set([...Object.keys(result.metafile.outputs)].map((output) => basename(output)));
for (const file of readdirSync(out)) {
  if (/^(app|style)-[A-Z0-9]{8,}\.(js|css)(\.map)?$/.test(file) && !current.has(file)) {
    rmSync(join(out, file));
  }
}
console.log(out);
