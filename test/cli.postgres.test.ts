/**
 * The ledger on Postgres from the CLI (`--state postgres://…`): a run killed on
 * finds its run in Postgres (no state.db is written) and resumes it.
 */
import { Effect } from "effect"
import { expect, it } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { connect, describePostgres, freshSchema } from "../packages/core/test/support/postgres.ts"
import { readParts, repo, runCli, startCli, tmpDir, waitFor, writeTickets } from "./support/files.ts"

const fixture = path.join(repo, "test/fixtures/tickets.pipeline.ts")

describePostgres("offpeak CLI with a Postgres ledger", (pgUrl) => {
  it("runs with its ledger in Postgres, is killed, and status and resume find the run there", async () => {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const { url } = yield* freshSchema(pgUrl, "cli")
      const dir = tmpDir("cli-pg")
      const input = path.join(dir, "tickets.csv")
      writeTickets(input, 1_500, 17)
      const out = path.join(dir, "out")
      const env = {
        OPENAI_API_KEY: undefined,
        OFFPEAK_STATE: url,
        OFFPEAK_EMULATOR_KNOBS: JSON.stringify({ linesPerSecond: 1_500 }),
        OFFPEAK_TEST_INPUT: input,
        OFFPEAK_TEST_OUT: out,
        OFFPEAK_TEST_MAX_REQUESTS: "200"
      }
      // the in-process emulator keeps its state in a folder both "machines" share
      const emulatorDir = path.join(dir, "shared")
      const first = startCli(["run", fixture, "--state-dir", emulatorDir], { cwd: dir, env })
      yield* Effect.promise(() =>
        waitFor("a submitted batch", () => /submitted [1-9]/.test(first.output().stderr) || readParts(out).length > 0, 60_000)
      )
      first.child.kill("SIGKILL")
      yield* Effect.promise(() => first.exit)
      expect(fs.existsSync(path.join(emulatorDir, "state.db"))).toBe(false)

      const status = yield* Effect.promise(() => runCli(["status", "--json"], { cwd: dir, env }))
      expect(status.code, status.stderr).toBe(0)
      const [run] = JSON.parse(status.stdout)
      expect(run.state).toBe("running")

      const resumed = yield* Effect.promise(() => runCli(["resume", run.id, "--state-dir", emulatorDir], { cwd: dir, env }))
      expect(resumed.code, resumed.stderr).toBe(0)
      const rows = readParts(out)
      expect(rows).toHaveLength(1_500)
      expect(new Set(rows.map((r) => r.id)).size).toBe(1_500)
    })))
  }, 120_000)

  it("status, failures, inspect, resume and cancel on a database with no ledger refuse it (exit 2) and create no table there", async () => {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const { url, schema } = yield* freshSchema(pgUrl, "empty")
      const dir = tmpDir("cli-pg-empty")
      for (const args of [["status"], ["failures", "some-run"], ["inspect", "some-run", "k"], ["resume", "some-run"], ["cancel", "some-run"]]) {
        const said = yield* Effect.promise(() => runCli([...args, "--state", url], { cwd: dir, env: { OFFPEAK_STATE: undefined } }))
        expect(said.code, `${args[0]}: ${said.stderr}`).toBe(2)
        expect(said.stderr).toMatch(/no ledger at postgres:\/\/\S+ \(no offpeak tables in that database\)/)
      }
      const sql = yield* connect(pgUrl)
      const tables = yield* sql<{ n: number }>`SELECT COUNT(*)::int AS n FROM information_schema.tables WHERE table_schema = ${schema}`
      expect(tables[0]!.n).toBe(0)
    })))
  }, 60_000)
})
