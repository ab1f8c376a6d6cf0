/**
 * offpeak's fixed cost: wall time, peak RSS and CPU of three CLI commands, this tree against a baseline tree.
 *
 *   scripts/with-node.sh node bench/startup.ts --baseline /tmp/startup-base
 *   scripts/with-node.sh node bench/startup.ts --baseline /tmp/startup-base --repeat 9 --rows 1000
 *   scripts/with-node.sh node bench/startup.ts                      # this tree alone
 *
 * The commands, each run as the `offpeak` binary runs (`node --max-semi-space-size=8 packages/core/src/bin.ts`,
 * `MALLOC_ARENA_MAX=2`) in a fresh temporary folder:
 * - `offpeak --help`;
 * - `offpeak status --state-dir <an empty folder>` (a new folder each time: the ledger is created);
 * - `offpeak run test/fixtures/tickets.pipeline.ts` on `--rows` rows (1,000) as one batch, on the OpenAI emulator
 *   the CLI starts in-process (no `OPENAI_API_KEY`), answering as fast as it can; its output is checked to hold
 *   every row once with an answer.
 *
 * Each command runs `--warmup` times (1) unmeasured for each tree (the OS file cache, Node's compile cache), then
 * `--repeat` times (5), the two trees alternating; medians are printed with their spread (min–max), and the ratio
 * current / baseline. Wall time is from spawn to exit, measured here; peak RSS and CPU (user + system, every thread)
 * are the child's own (`process.resourceUsage()` at exit, reported by a 7-line module given to `--import`, the same
 * for both trees). On a machine shared with other work, CPU is the steadier figure.
 *
 * The baseline is another checkout, e.g. `git worktree add --detach /tmp/startup-base <commit>`, with this tree's
 * dependencies linked in (`ln -s $PWD/node_modules /tmp/startup-base/node_modules`, never `npm ci`). That link alone
 * would run the baseline on this tree's code: `node_modules/@offpeak/*` point at `../../packages/*`, which resolves
 * inside this tree. When the baseline's `node_modules` is such a link, it is replaced by a folder of links to the same
 * packages whose `@offpeak/*` point at the baseline's own packages (said on stderr); a baseline whose `@offpeak/core`
 * still resolves outside it is refused.
 *
 * `--no-compile-cache` sets `NODE_DISABLE_COMPILE_CACHE=1` for both trees (what Node's compile cache is worth:
 * compare with a run without it). `NODE_COMPILE_CACHE`, `NODE_OPTIONS`, `OFFPEAK_STATE`, the OpenAI variables and
 * the OpenTelemetry ones are removed from the children's environment. The figures also go to
 * bench/.data/startup-last.json.
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { writeTickets } from "../test/support/files.ts"

const { values } = parseArgs({
  options: {
    baseline: { type: "string" },
    repeat: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
    rows: { type: "string", default: "1000" },
    "no-compile-cache": { type: "boolean", default: false }
  }
})

const count = (flag: string, text: string, min: number) => {
  const n = Number(text)
  if (!Number.isInteger(n) || n < min) throw new Error(`--${flag} must be an integer ≥ ${min}, got "${text}"`)
  return n
}
const repeat = count("repeat", values.repeat, 1)
const warmup = count("warmup", values.warmup, 0)
const rows = count("rows", values.rows, 1)
const current = path.resolve(import.meta.dirname, "..")

// ===== the trees =====

interface Tree {
  readonly label: "current" | "baseline"
  readonly dir: string
}

const inside = (dir: string, file: string) => {
  const relative = path.relative(fs.realpathSync(dir), fs.realpathSync(file))
  return !relative.startsWith("..") && !path.isAbsolute(relative)
}

/** the baseline runs its own `@offpeak/*` packages, relinking a `node_modules` that is a link to this tree's */
const checkTree = (tree: Tree) => {
  const bin = path.join(tree.dir, "packages/core/src/bin.ts")
  if (!fs.existsSync(bin)) throw new Error(`${tree.label} tree ${tree.dir}: no packages/core/src/bin.ts`)
  const modules = path.join(tree.dir, "node_modules")
  if (!fs.existsSync(modules)) {
    throw new Error(`${tree.label} tree ${tree.dir} has no node_modules: ln -s ${path.join(current, "node_modules")} ${modules}`)
  }
  const core = path.join(modules, "@offpeak/core")
  if (inside(tree.dir, core)) return
  if (tree.label === "baseline" && fs.lstatSync(modules).isSymbolicLink()) {
    const target = fs.realpathSync(modules)
    fs.unlinkSync(modules)
    fs.mkdirSync(path.join(modules, "@offpeak"), { recursive: true })
    for (const entry of fs.readdirSync(target)) {
      if (entry !== "@offpeak") fs.symlinkSync(path.join(target, entry), path.join(modules, entry))
    }
    for (const pkg of fs.readdirSync(path.join(tree.dir, "packages"))) {
      if (fs.existsSync(path.join(tree.dir, "packages", pkg, "package.json"))) {
        fs.symlinkSync(path.join("../../packages", pkg), path.join(modules, "@offpeak", pkg))
      }
    }
    process.stderr.write(
      `baseline: ${modules} linked to ${target}, whose @offpeak/* are ${path.dirname(path.dirname(target))}'s packages; ` +
        `replaced by a folder of links to the same dependencies with @offpeak/* → ${path.join(tree.dir, "packages")}\n`
    )
    if (inside(tree.dir, core)) return
  }
  throw new Error(
    `${tree.label} tree ${tree.dir}: node_modules/@offpeak/core resolves to ${fs.realpathSync(core)}, outside the tree, ` +
      `so it would run another tree's code; link node_modules/@offpeak/{core,providers,sources} to ../../packages/*`
  )
}

const trees: Array<Tree> = [{ label: "current", dir: current }]
if (values.baseline !== undefined) {
  const dir = path.resolve(values.baseline)
  if (dir === current) throw new Error("--baseline is this tree")
  trees.push({ label: "baseline", dir })
}
trees.forEach(checkTree)

// ===== running a command =====

const work = fs.mkdtempSync(path.join(os.tmpdir(), "offpeak-startup-"))
const children = new Set<ChildProcess>()
process.on("exit", () => {
  children.forEach((child) => child.kill("SIGKILL"))
  fs.rmSync(work, { recursive: true, force: true })
})
process.on("SIGINT", () => process.exit(130))

/** loaded with `--import`: the child's peak RSS and CPU at exit, on file descriptor 3 */
const probe = path.join(work, "probe.mjs")
fs.writeFileSync(
  probe,
  [
    `import { writeSync } from "node:fs"`,
    `import { isMainThread } from "node:worker_threads"`,
    `if (isMainThread) process.on("exit", () => {`,
    `  const u = process.resourceUsage()`,
    `  try { writeSync(3, JSON.stringify({ maxRssKb: u.maxRSS, cpuUs: u.userCPUTime + u.systemCPUTime }) + "\\n") } catch {}`,
    `})`,
    ``
  ].join("\n")
)

const env = (extra: Record<string, string>): NodeJS.ProcessEnv => {
  const out: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(OPENAI_|OTEL_|NODE_OPTIONS$|NODE_COMPILE_CACHE$|NODE_DISABLE_COMPILE_CACHE$|OFFPEAK_)/.test(k)) continue
    out[k] = v
  }
  if (values["no-compile-cache"]) out.NODE_DISABLE_COMPILE_CACHE = "1"
  return { ...out, MALLOC_ARENA_MAX: "2", NO_COLOR: "1", ...extra }
}

interface Measure {
  readonly wallMs: number
  readonly rssMb: number
  readonly cpuMs: number
}

const TIMEOUT_MS = 180_000

/** runs `offpeak <args>` of `tree` in `cwd`; fails unless it exits 0 */
const offpeak = async (tree: Tree, args: ReadonlyArray<string>, cwd: string, extra: Record<string, string> = {}) => {
  const started = performance.now()
  const child = spawn(
    process.execPath,
    ["--max-semi-space-size=8", "--import", probe, path.join(tree.dir, "packages/core/src/bin.ts"), ...args],
    { cwd, env: env(extra), stdio: ["ignore", "pipe", "pipe", "pipe"] }
  )
  children.add(child)
  let stdout = ""
  let stderr = ""
  let probed = ""
  child.stdout!.on("data", (d) => (stdout += d))
  child.stderr!.on("data", (d) => (stderr += d))
  ;(child.stdio[3] as NodeJS.ReadableStream).on("data", (d) => (probed += d))
  const timer = setTimeout(() => child.kill("SIGKILL"), TIMEOUT_MS)
  const code = await new Promise<number | null>((resolve) => child.once("close", (c) => resolve(c)))
  const wallMs = performance.now() - started
  clearTimeout(timer)
  children.delete(child)
  if (code !== 0) {
    throw new Error(`${tree.label}: offpeak ${args.join(" ")} exited ${code}\n${stderr.slice(-2000)}${stdout.slice(-2000)}`)
  }
  const usage = JSON.parse(probed.trim()) as { maxRssKb: number; cpuUs: number }
  return { measure: { wallMs, rssMb: usage.maxRssKb / 1024, cpuMs: usage.cpuUs / 1000 } satisfies Measure, stdout }
}

// ===== the commands =====

const input = path.join(work, "tickets.csv")
writeTickets(input, rows)
let runs = 0
/** a folder of its own for each run */
const fresh = () => {
  const dir = path.join(work, `run-${++runs}`)
  fs.mkdirSync(dir)
  return dir
}

/** every row of the input once in the output's part files, each with an answer */
const verifyOutput = (out: string, what: string) => {
  const ids = new Set<string>()
  for (const file of fs.readdirSync(out).filter((f) => /^part-.*\.jsonl$/.test(f))) {
    for (const line of fs.readFileSync(path.join(out, file), "utf8").split("\n")) {
      if (line.length === 0) continue
      const row = JSON.parse(line) as { id?: unknown; output?: { category?: unknown } }
      if (typeof row.id !== "string" || typeof row.output?.category !== "string") throw new Error(`${what}: a row without an answer: ${line}`)
      if (ids.has(row.id)) throw new Error(`${what}: row ${row.id} written twice`)
      ids.add(row.id)
    }
  }
  if (ids.size !== rows) throw new Error(`${what}: ${ids.size} of ${rows} rows in ${out}`)
}

interface Command {
  readonly name: string
  readonly run: (tree: Tree) => Promise<Measure>
}

const commands: Array<Command> = [
  {
    name: "offpeak --help",
    run: async (tree) => {
      const { measure, stdout } = await offpeak(tree, ["--help"], fresh())
      if (!/\brun\b/.test(stdout) || !/\bstatus\b/.test(stdout)) throw new Error(`${tree.label}: --help printed no commands:\n${stdout}`)
      return measure
    }
  },
  {
    name: "offpeak status (empty state dir)",
    run: async (tree) => {
      const dir = fresh()
      return (await offpeak(tree, ["status", "--state-dir", path.join(dir, "state")], dir)).measure
    }
  },
  {
    name: `offpeak run, ${rows.toLocaleString("en-US")} rows (emulator)`,
    run: async (tree) => {
      const dir = fresh()
      const out = path.join(dir, "out")
      const { measure } = await offpeak(
        tree,
        ["run", path.join(tree.dir, "test/fixtures/tickets.pipeline.ts"), "--state-dir", path.join(dir, "state")],
        dir,
        {
          OFFPEAK_TEST_INPUT: input,
          OFFPEAK_TEST_OUT: out,
          OFFPEAK_TEST_MAX_REQUESTS: String(rows),
          OFFPEAK_EMULATOR_KNOBS: JSON.stringify({ linesPerSecond: 1e9, validationMs: 0, finalizingMs: 0 })
        }
      )
      verifyOutput(out, `${tree.label}: run`)
      return measure
    }
  }
]

// ===== measuring =====

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const fmt = (n: number) => Math.round(n).toLocaleString("en-US")
const spread = (xs: ReadonlyArray<number>) => `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`

const results: Array<{ command: string; tree: Tree["label"]; dir: string; runs: Array<Measure> }> = []
for (const command of commands) {
  for (const tree of trees) {
    for (let i = 0; i < warmup; i++) await command.run(tree)
  }
  const measured = new Map<Tree["label"], Array<Measure>>(trees.map((t) => [t.label, []]))
  for (let i = 0; i < repeat; i++) {
    // alternate which tree goes first, so a drift in the machine's load falls on both
    for (const tree of i % 2 === 0 ? trees : [...trees].reverse()) {
      const m = await command.run(tree)
      measured.get(tree.label)!.push(m)
      process.stderr.write(`${command.name} · ${tree.label} #${i + 1}: ${fmt(m.wallMs)} ms, ${fmt(m.rssMb)} MB, ${fmt(m.cpuMs)} ms CPU\n`)
    }
  }
  for (const tree of trees) results.push({ command: command.name, tree: tree.label, dir: tree.dir, runs: measured.get(tree.label)! })
}

// ===== report =====

const load = os.loadavg()[0]!.toFixed(1)
const lines = [
  `offpeak startup: medians of ${repeat} (min–max) after ${warmup} warm-up run${warmup === 1 ? "" : "s"} each; ` +
    `Node ${process.version}, ${os.cpus().length} CPUs, load ${load}${values["no-compile-cache"] ? ", compile cache off" : ""}`,
  "",
  "| command | tree | wall ms | peak RSS MB | CPU ms |",
  "|---|---|---:|---:|---:|"
]
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`
for (const command of commands) {
  const of = (label: Tree["label"]) => results.find((r) => r.command === command.name && r.tree === label)
  for (const tree of trees) {
    const r = of(tree.label)!
    lines.push(
      `| ${command.name} | ${tree.label} (${tree.dir}) | ${spread(r.runs.map((m) => m.wallMs))} | ` +
        `${spread(r.runs.map((m) => m.rssMb))} | ${spread(r.runs.map((m) => m.cpuMs))} |`
    )
  }
  const a = of("current")
  const b = of("baseline")
  if (a !== undefined && b !== undefined) {
    const m = (r: typeof a, k: keyof Measure) => median(r.runs.map((x) => x[k]))
    lines.push(
      `| ${command.name} | current / baseline | ${ratio(m(a, "wallMs"), m(b, "wallMs"))} | ${ratio(m(a, "rssMb"), m(b, "rssMb"))} | ` +
        `${ratio(m(a, "cpuMs"), m(b, "cpuMs"))} |`
    )
  }
}
process.stdout.write(lines.join("\n") + "\n")

const data = path.join(current, "bench/.data")
fs.mkdirSync(data, { recursive: true })
fs.writeFileSync(
  path.join(data, "startup-last.json"),
  JSON.stringify(
    {
      node: process.version,
      cpus: os.cpus().length,
      load: os.loadavg(),
      repeat,
      warmup,
      rows,
      compileCache: !values["no-compile-cache"],
      results: results.map((r) => ({
        ...r,
        median: { wallMs: median(r.runs.map((m) => m.wallMs)), rssMb: median(r.runs.map((m) => m.rssMb)), cpuMs: median(r.runs.map((m) => m.cpuMs)) }
      }))
    },
    null,
    2
  ) + "\n"
)
