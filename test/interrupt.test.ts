/**
 * Interrupting a run (Ctrl-C) releases every resource it opened: file handles
 * (source, ledger, batch and part files), temporary files, and the in-process
 * emulator's socket — while the run stays resumable.
 */
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Progress from "@offpeak/core/Progress"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { plugin } from "@offpeak/providers/openai"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Fixture from "./fixtures/tickets.pipeline.ts"
import { readParts, tmpDir, writeTickets } from "./support/files.ts"

/** open file descriptors of this process that point under `dir` */
const openUnder = (dir: string) =>
  fs.readdirSync("/proc/self/fd").flatMap((fd) => {
    try {
      const target = fs.readlinkSync(`/proc/self/fd/${fd}`)
      return target.startsWith(dir) ? [target] : []
    } catch {
      return []
    }
  })

const walk = (dir: string): Array<string> =>
  fs.existsSync(dir)
    ? fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]
    )
    : []

describe("interrupt", () => {
  it.live("releases files, temp files and the emulator socket at every stage; the run resumes", () =>
    Effect.gen(function*() {
      const work = tmpDir("interrupt")
      const input = path.join(work, "tickets.csv")
      writeTickets(input, 2_000, 21)
      const emulatorDir = tmpDir("interrupt-emulator")
      process.env.OFFPEAK_EMULATOR_KNOBS = JSON.stringify({ linesPerSecond: 800, validationMs: 20 })
      let runId: string | undefined
      // interrupt at different moments: while reading, while batches run, while parts are written
      for (const [i, afterMs] of [50, 400, 1_200, 2_500].entries()) {
        const out = path.join(work, "out")
        const notices: Array<string> = []
        const layer = Layer.mergeAll(
          plugin.layer({ emulatorDir, onNotice: (line) => notices.push(line) }),
          Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(work, "state.db") })))
        )
        const progress = Progress.make()
        const pipeline = Fixture.make({ input, out, maxRequests: 100, maxInFlight: 3 })
        const fiber = yield* Pipeline.run(pipeline, {
          stateDir: work,
          progress,
          ...(runId === undefined ? { runId: "interrupted" } : { resume: runId })
        }).pipe(Effect.provide(layer), Effect.forkChild)
        yield* Effect.sleep(afterMs)
        // interrupting must end: a resource that never lets go would hang here
        yield* Fiber.interrupt(fiber).pipe(
          Effect.timeoutOrElse({
            duration: "30 seconds",
            orElse: () => Effect.die(new Error(`attempt ${i}: interrupting the run did not end within 30 s`))
          })
        )
        // an interrupt before the run was recorded leaves nothing to resume: the next attempt starts it
        if (progress.runId === "interrupted") runId = "interrupted"
        const url = /at (http:\/\/\S+)/.exec(notices.join("\n"))?.[1]
        assert.isDefined(url, `attempt ${i}: the emulator said where it ran`)
        // nothing of ours is left open, nothing half-written is left behind
        assert.deepStrictEqual(openUnder(work), [], `attempt ${i}: open files`)
        assert.deepStrictEqual(walk(work).filter((f) => f.includes(".tmp")), [], `attempt ${i}: temp files`)
        // the in-process emulator's socket is closed
        const answer = yield* Effect.promise(() =>
          fetch(url!, { signal: AbortSignal.timeout(5_000) }).then(
            () => "answered",
            (e: Error) => e.name === "TimeoutError" ? "still listening" : "refused"
          )
        )
        assert.strictEqual(answer, "refused", `attempt ${i}: the emulator's socket is not closed`)
      }
      // and the run is still whole: resume it to the end
      const out = path.join(work, "out")
      const summary = yield* Pipeline.run(Fixture.make({ input, out, maxRequests: 100, maxInFlight: 3 }), {
        stateDir: work,
        resume: runId!
      }).pipe(
        Effect.provide(Layer.mergeAll(
          plugin.layer({ emulatorDir, onNotice: () => {} }),
          Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(work, "state.db") })))
        ))
      )
      delete process.env.OFFPEAK_EMULATOR_KNOBS
      assert.strictEqual(summary.state, "completed")
      const rows = readParts(out)
      assert.strictEqual(rows.length, 2_000)
      assert.strictEqual(new Set(rows.map((r) => r.id)).size, 2_000)
    }), { timeout: 120_000 })
})
