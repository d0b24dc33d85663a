// Builds the browser demo into a directory the gateway serves (GATEWAY_WEB_ROOT): index.html at
// `/`, app.js and style.css under `/static/`.
//
//   node build.mjs [OUT_DIR]        (default: ../target/web-demo/dist)

import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, "../target/web-demo/dist"));
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(here, "src/app.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  logLevel: "warning",
  outfile: join(out, "app.js"),
});
for (const file of ["index.html", "style.css"]) copyFileSync(join(here, "public", file), join(out, file));
console.log(out);
