/** Helpers shared by the cross-package tests: temp folders, generated inputs, part files, the CLI. */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { DatabaseSync } from "node:sqlite"

export const repo = path.resolve(import.meta.dirname, "../..")
export const bin = path.join(repo, "packages/core/src/bin.ts")

/** how the installed binary starts Node (its shebang, see packages/core/src/bin.ts): a small young generation, two malloc arenas */
export const binaryNode = { args: ["--max-semi-space-size=8"], env: { MALLOC_ARENA_MAX: "2" } } as const

export const tmpDir = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), `offpeak-${prefix}-`))

/** a deterministic PRNG (mulberry32) */
export const prng = (seed: number) => () => {
  seed |= 0
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

const WORDS = (
  "invoice refund charged twice billing card login password account locked email crash export report bug error " +
  "dashboard slow search broken feature request dark mode api bulk edit shipping package arrived tracking label " +
  "address order wrong item blue red case thanks team urgent blocked please help today since yesterday version " +
  "update mobile desktop browser chrome firefox safari settings profile subscription plan upgrade downgrade cancel"
).split(" ")

/** one support-ticket-like text of `words` words */
export const text = (rand: () => number, words: number) =>
  Array.from({ length: words }, () => WORDS[Math.floor(rand() * WORDS.length)]!).join(" ")

/** writes a CSV of `n` tickets (id,text) with varied lengths, some quoted with commas and newlines */
export const writeTickets = (file: string, n: number, seed = 1) => {
  const rand = prng(seed)
  const lines = ["id,text"]
  for (let i = 1; i <= n; i++) {
    const words = 5 + Math.floor(rand() * rand() * 120)
    let body = `${i}: ${text(rand, words)}`
    if (i % 17 === 0) body = `"${body}, with a comma"`
    else if (i % 29 === 0) body = `"${body}\nand a second line"`
    lines.push(`r${String(i).padStart(6, "0")},${body}`)
  }
  fs.writeFileSync(file, lines.join("\n") + "\n")
}

/** every JSON row of the part files directly in `dir` */
export const readParts = (dir: string): Array<any> => {
  if (!fs.existsSync(dir)) return []
  return fs.readdirSync(dir)
    .filter((f) => f.startsWith("part-") && f.endsWith(".jsonl"))
    .sort()
    .flatMap((f) => fs.readFileSync(path.join(dir, f), "utf8").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l)))
}

export interface Exit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

const running = new Set<ChildProcess>()

/** SIGKILLs every CLI process a test started and that still runs (for `afterAll`) */
export const killAll = (): void => running.forEach((child) => child.kill("SIGKILL"))

/** starts the offpeak CLI as a child process */
export const startCli = (args: ReadonlyArray<string>, options: { cwd: string; env?: NodeJS.ProcessEnv }) => {
  const env: NodeJS.ProcessEnv = { ...process.env, ...binaryNode.env, ...options.env }
  for (const [k, v] of Object.entries(options.env ?? {})) if (v === undefined) delete env[k]
  const child = spawn(process.execPath, [...binaryNode.args, bin, ...args], {
    cwd: options.cwd,
    env,
    stdio: ["ignore", "pipe", "pipe"]
  })
  running.add(child)
  child.on("exit", () => running.delete(child))
  let stdout = ""
  let stderr = ""
  child.stdout.on("data", (d) => (stdout += d))
  child.stderr.on("data", (d) => (stderr += d))
  const exit = new Promise<Exit>((resolve) =>
    child.on("exit", (code, signal) => setTimeout(() => resolve({ code, signal, stdout, stderr }), 20))
  )
  return { child, exit, output: () => ({ stdout, stderr }) }
}

/** runs the offpeak CLI to its end */
export const runCli = (args: ReadonlyArray<string>, options: { cwd: string; env?: NodeJS.ProcessEnv }) =>
  startCli(args, options).exit

export const waitFor = async (what: string, check: () => boolean, timeoutMs = 60_000) => {
  const start = Date.now()
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

/** `offpeak emulator <provider>` in another process, its state in `<dir>/emulator`; resolves to its base URL */
export const startEmulator = async (provider: string, dir: string, knobs: object = {}): Promise<string> => {
  const emulator = startCli(["emulator", provider, "--dir", path.join(dir, "emulator"), "--knobs", JSON.stringify(knobs)], {
    cwd: dir
  })
  await waitFor("emulator url", () => /http:\/\/\S+/.test(emulator.output().stdout), 30_000)
  return /http:\/\/\S+/.exec(emulator.output().stdout)![0]
}

/** rows of a read-only query on a SQLite ledger */
export const query = <A>(db: string, sql: string): Array<A> => {
  const conn = new DatabaseSync(db, { readOnly: true })
  try {
    return conn.prepare(sql).all() as Array<A>
  } finally {
    conn.close()
  }
}

/** batches of a SQLite ledger that reached the provider (0 while the ledger does not exist yet) */
export const submittedBatches = (db: string): number => {
  try {
    return fs.existsSync(db)
      ? query<{ n: number }>(db, "SELECT COUNT(*) AS n FROM offpeak_batches WHERE remote_id IS NOT NULL")[0]!.n
      : 0
  } catch {
    return 0
  }
}
