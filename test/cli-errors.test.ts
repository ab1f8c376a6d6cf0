/**
 * Errors that say where, as a user meets them: a pipeline module with a syntax error or that throws while it loads
 * (file, line, column, the line itself), bad emulator knobs (not JSON, a misspelt knob), a corrupt or full state
 * database (its path and what to do), a state folder that does not exist yet, and a provider that cannot be reached
 * (the host and the cause, not an SDK's "Connection error."). No stack trace on stdout, nor on stderr unless asked.
 */
import * as ProviderPlugin from "@offpeak/core/ProviderPlugin"
import * as ProviderError from "@offpeak/core/ProviderError"
import * as Provider from "@offpeak/core/Provider"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { Cause, Context, Effect, Exit, Layer, Result } from "effect"
import { SqlClient } from "effect/sql"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import OpenAI from "openai"
import { afterAll, describe, expect, it } from "vitest"
import { killAll, repo, runCli, tmpDir, writeTickets } from "./support/files.ts"

afterAll(killAll)

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")
/** a stack frame, as Node prints them */
const STACK_FRAME = /^\s+at .+:\d+:\d+\)?$/m

/** a port nothing listens on */
const closedPort = async (): Promise<number> => {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

describe("a pipeline module that cannot be loaded", () => {
  const dir = tmpDir("cli-module")
  const write = (name: string, text: string) => {
    fs.writeFileSync(path.join(dir, name), text)
    return name
  }

  it("a syntax error: the file, line and column, the line with a caret; exit 1 and nothing on stdout", async () => {
    write("broken.ts", `import * as Pipeline from "@offpeak/core/Pipeline"\nexport default Pipeline.make({\n  name: "x",,\n})\n`)
    // a module that imports the broken one: the error is where the syntax error is, the module is named too
    write("imports-broken.ts", `import p from "./broken.ts"\nexport default p\n`)
    const exit = await runCli(["run", "broken.ts", "--state-dir", "st"], { cwd: dir })
    console.log(exit.stderr)
    expect(exit.code).toBe(1)
    expect(exit.stdout).toBe("")
    expect(exit.stderr).toMatch(/broken\.ts:3:13: syntax error: Unexpected token `,`.*\(loading the pipeline module broken\.ts\)/)
    expect(exit.stderr).toContain(`  3 |   name: "x",,\n    |             ^`)
    expect(exit.stderr).not.toMatch(STACK_FRAME)
    const nested = await runCli(["run", "imports-broken.ts", "--state-dir", "st"], { cwd: dir })
    expect(nested.stderr).toMatch(/broken\.ts:3:13: syntax error: .*\(loading the pipeline module imports-broken\.ts\)/)
  })

  it("an exception while it loads: where it was thrown, with the message", async () => {
    write(
      "throws.ts",
      `const table = process.env.NO_SUCH_TABLE\n\nfunction need(name: string | undefined): string {\n  if (name === undefined) throw new Error("set NO_SUCH_TABLE")\n  return name\n}\nexport default need(table)\n`
    )
    const exit = await runCli(["run", "throws.ts", "--state-dir", "st"], { cwd: dir })
    console.log(exit.stderr)
    expect(exit.code).toBe(1)
    expect(exit.stdout).toBe("")
    expect(exit.stderr).toMatch(/throws\.ts:4:33: Error: set NO_SUCH_TABLE \(thrown while loading the pipeline module throws\.ts\)/)
    expect(exit.stderr).toContain(`  4 |   if (name === undefined) throw new Error("set NO_SUCH_TABLE")`)
    expect(exit.stderr).not.toMatch(STACK_FRAME)
  })

  it("a module that exports no pipeline, or does not exist: a usage error (exit 2)", async () => {
    write("nothing.ts", `export const x = 1\n`)
    const none = await runCli(["run", "nothing.ts"], { cwd: dir })
    expect(none.code).toBe(2)
    expect(none.stderr).toMatch(/nothing\.ts must export a pipeline \(export default Pipeline\.make\(\{\.\.\.\}\)\)/)
    const missing = await runCli(["run", "missing.ts"], { cwd: dir })
    expect(missing.code).toBe(2)
    expect(missing.stderr).toMatch(/missing\.ts: no such file/)
  })
})

describe("emulator knobs", () => {
  it("OFFPEAK_EMULATOR_KNOBS that is not JSON: a clear error naming the variable, no stack trace", async () => {
    const dir = tmpDir("cli-knobs")
    writeTickets(path.join(dir, "t.csv"), 5)
    const exit = await runCli(["run", fixture, "--state-dir", "st"], {
      cwd: dir,
      env: {
        OPENAI_API_KEY: undefined,
        OFFPEAK_TEST_INPUT: path.join(dir, "t.csv"),
        OFFPEAK_TEST_OUT: path.join(dir, "out"),
        OFFPEAK_EMULATOR_KNOBS: `{"lineFailures": [{"status": 500, "rate": 0.1}]`
      }
    })
    console.log(exit.stderr)
    expect(exit.code).toBe(1)
    expect(exit.stdout).toBe("")
    expect(exit.stderr).toMatch(/OFFPEAK_EMULATOR_KNOBS is not valid JSON \(.*position \d+.*\): \{"lineFailures"/)
    expect(exit.stderr).not.toMatch(STACK_FRAME)
  }, 60_000)

  it("a misspelt knob is refused naming the closest one, never silently ignored", async () => {
    const served: Array<Record<string, unknown>> = []
    const plugin = ProviderPlugin.make<Record<string, unknown>>({
      name: "fake",
      label: "Fake",
      apiKeyEnv: "OFFPEAK_TEST_FAKE_KEY",
      baseUrlEnv: "OFFPEAK_TEST_FAKE_URL",
      defaultBaseUrl: "http://127.0.0.1:1",
      real: () => Layer.effect(Provider.Provider, Effect.die("not used")),
      knobs: ["lineFailures", "completionWindowMs", "endpointFaults", "seed"],
      serve: (options) => Effect.sync(() => (served.push(options), { url: "http://127.0.0.1:1", dir: options.dir })),
      adapter: () => Effect.die("the adapter is built only after the knobs are accepted")
    })
    const build = (knobs: string) =>
      Effect.runPromiseExit(Effect.scoped(Effect.gen(function*() {
        process.env.OFFPEAK_EMULATOR_KNOBS = knobs
        return yield* Layer.build(plugin.layer({ emulatorDir: tmpDir("knobs"), onNotice: () => {} }))
      })).pipe(Effect.ensuring(Effect.sync(() => delete process.env.OFFPEAK_EMULATOR_KNOBS))))
    const misspelt = await build(`{"lineFailure": [{"status": 500, "rate": 0.1}], "completionWindow": 1000}`)
    expect(Exit.isFailure(misspelt)).toBe(true)
    const message = Exit.isFailure(misspelt) ? String((Cause.squash(misspelt.cause) as Error).message) : ""
    console.log(message)
    expect(message).toBe(
      `OFFPEAK_EMULATOR_KNOBS: unknown knobs "lineFailure" (did you mean "lineFailures"?), "completionWindow" (did you mean ` +
        `"completionWindowMs"?); the Fake emulator's knobs are completionWindowMs, endpointFaults, lineFailures, seed`
    )
    expect(served).toHaveLength(0)
    const notAnObject = ProviderPlugin.parseKnobs(`[1, 2]`, { from: "--knobs" })
    expect(Result.isFailure(notAnObject) && notAnObject.failure.message).toBe("--knobs must be a JSON object of knobs, got [1,2]")
    const fine = ProviderPlugin.parseKnobs(`{"seed": 4}`, { from: "--knobs", known: ["seed"] })
    expect(Result.isSuccess(fine) && fine.success).toEqual({ seed: 4 })
    // `offpeak emulator --knobs` goes through serveEmulator: checked the same way
    const serving = await Effect.runPromiseExit(Effect.scoped(plugin.serveEmulator({ dir: tmpDir("knobs"), knobs: { sed: 4 } })))
    expect(Exit.isFailure(serving) && String((Cause.squash(serving.cause) as Error).message)).toMatch(/--knobs: unknown knob "sed" \(did you mean "seed"\?\)/)
  })
})

describe("the state database", () => {
  it("a corrupt state.db: its path and what to do, exit 1", async () => {
    const dir = tmpDir("cli-corrupt")
    fs.mkdirSync(path.join(dir, "st"))
    fs.writeFileSync(path.join(dir, "st", "state.db"), Buffer.alloc(8192, 0x5a))
    const db = path.join(dir, "st", "state.db")
    for (const args of [["status", "--state-dir", "st"], ["run", fixture, "--state-dir", "st"]]) {
      const exit = await runCli(args, { cwd: dir, env: { OPENAI_API_KEY: undefined } })
      console.log(exit.stderr)
      expect(exit.code).toBe(1)
      expect(exit.stdout).toBe("")
      expect(exit.stderr).toContain(`the state database ${db} is corrupt (file is not a database). Move it aside (mv '${db}' '${db}.corrupt')`)
      expect(exit.stderr).not.toMatch(STACK_FRAME)
    }
  }, 60_000)

  it("a full disk: the path and what to do (SQLite's SQLITE_FULL, from a page limit)", async () => {
    const file = path.join(tmpDir("sqlite-full"), "state.db")
    const exit = await Effect.runPromiseExit(Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(SqliteClient.layer({ filename: file }))
      const sql = Context.get(context, SqlClient.SqlClient)
      yield* sql`CREATE TABLE t (v TEXT)`
      // the same error a full disk gives: the file may not grow
      yield* sql.unsafe(`PRAGMA max_page_count = ${Number((yield* sql<{ n: number }>`PRAGMA page_count`.pipe(Effect.map((r) => Object.values(r[0]!)[0]))))}`)
      for (let i = 0; i < 100; i++) yield* sql`INSERT INTO t (v) VALUES (${"x".repeat(10_000)})`
    })))
    expect(Exit.isFailure(exit)).toBe(true)
    const message = Exit.isFailure(exit) ? String((Cause.squash(exit.cause) as Error).message) : ""
    console.log(message)
    expect(message).toMatch(new RegExp(`^the disk holding the state database ${file.replace(/[.]/g, "\\.")} is full \\(database or disk is full\\)\\. Free space there`))
  })

  it("SqliteClient.layer creates the database's folder", async () => {
    const file = path.join(tmpDir("sqlite-folder"), "a", "b", "state.db")
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(SqliteClient.layer({ filename: file }))
      yield* Context.get(context, SqlClient.SqlClient)`CREATE TABLE t (v TEXT)`
    })))
    expect(fs.existsSync(file)).toBe(true)
  })
})

describe("a provider that cannot be reached", () => {
  it("a run that never reached its provider stops after about 30 s, saying to check the base URL, and how to resume", async () => {
    const dir = tmpDir("cli-never-answered")
    const input = path.join(dir, "tickets.csv")
    writeTickets(input, 30, 6)
    const port = await closedPort()
    const started = Date.now()
    const run = await runCli(["run", fixture, "--state-dir", "st"], {
      cwd: dir,
      env: {
        OPENAI_API_KEY: "sk-test",
        OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1`,
        OFFPEAK_TEST_INPUT: input,
        OFFPEAK_TEST_OUT: path.join(dir, "out")
      }
    })
    const tookMs = Date.now() - started
    console.log(`never answered: exit ${run.code} after ${tookMs} ms\n${run.stdout}`)
    expect(run.code).toBe(1)
    // not retry.transientFor (6 hours): the last attempt at 30 s, not a doubled wait past it, and what to check
    expect(tookMs).toBeLessThan(60_000)
    expect(run.stdout).toMatch(
      new RegExp(`cannot connect to 127\\.0\\.0\\.1:${port}: connection refused .*\\(nothing answered in (\\d+m )?\\d+s since this process started: check the provider's base URL and the network, then resume the run\\)`)
    )
    expect(run.stdout).toMatch(/resume\s+offpeak resume tickets-\S+ --state-dir st/)
    // the last word before it stopped is not a "next attempt" it never made
    expect(run.stderr.trimEnd().split("\n").filter((l) => /provider unreachable/.test(l)).at(-1)).not.toMatch(/in [\d.]+ ?m?s\)?;? failing for 1m/)
  }, 150_000)

  it("reasonOfFailure names the host and the cause behind an SDK's \"Connection error.\"", async () => {
    const port = await closedPort()
    const client = new OpenAI({ apiKey: "x", baseURL: `http://127.0.0.1:${port}/v1`, maxRetries: 0 })
    const error = await client.batches.list().then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(OpenAI.APIConnectionError)
    expect((error as Error).message).toBe("Connection error.")
    const reason = ProviderError.reasonOfFailure(error)
    console.log(reason.message)
    expect(reason._tag).toBe("Transport")
    expect(reason.message).toBe(`cannot connect to 127.0.0.1:${port}: connection refused (connect ECONNREFUSED 127.0.0.1:${port})`)
    // a name that does not resolve, straight from fetch
    const unresolved = await fetch("http://no-such-host.invalid/").then(() => undefined, (e: unknown) => e)
    const named = ProviderError.reasonOfFailure(unresolved)
    console.log(named.message)
    expect(named._tag).toBe("Transport")
    expect(named.message).toMatch(/^cannot connect to no-such-host\.invalid: host not found \(getaddrinfo (ENOTFOUND|EAI_AGAIN) no-such-host\.invalid\)$/)
    // every address of a name refused (happy eyeballs): the errors of an AggregateError
    const both = new AggregateError(
      [Object.assign(new Error("connect ECONNREFUSED ::1:9"), { code: "ECONNREFUSED", address: "::1", port: 9, syscall: "connect" })],
      ""
    )
    expect(ProviderError.reasonOfFailure(new TypeError("fetch failed", { cause: both })).message).toBe(
      "cannot connect to ::1:9: connection refused (connect ECONNREFUSED ::1:9)"
    )
    // what is not a network failure stays a protocol failure
    expect(ProviderError.reasonOfFailure(new Error("Unexpected token < in JSON"))._tag).toBe("Protocol")
  })
})
