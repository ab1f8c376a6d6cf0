/**
 * Bad input, end to end: each bad row ends in the dead letter with a reason
 * naming the file, the row and the field, and nothing else in the run is lost.
 */
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { Emulator, OpenAiBatch } from "@offpeak/providers/openai"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Fixture from "./fixtures/tickets.pipeline.ts"
import { readParts, tmpDir } from "./support/files.ts"

const layers = (url: string, stateDir: string) =>
  Layer.mergeAll(
    OpenAiBatch.layer({ apiKey: Redacted.make("test"), baseURL: url, pollInterval: { initial: "20 millis", max: "100 millis" } }),
    Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(stateDir, "state.db") })))
  )

describe("bad input", () => {
  it.live("every kind of bad row is dead-lettered with file, row and field; the good rows all arrive", () =>
    Effect.gen(function*() {
      const dir = tmpDir("bad-input")
      const input = path.join(dir, "tickets.csv")
      fs.writeFileSync(input, Buffer.concat([
        Buffer.from(
          [
            "id,text",
            "r1,my invoice is wrong",
            ",an empty id fails the schema", // row 2
            "r3,too,many,fields", // row 3
            "r4,the app crashes",
            "r1,the same key again", // row 5: duplicate of row 1
            `r6,${"a very long ticket ".repeat(400)}`, // row 6: over the per-request size
            "r7,caf"
          ].join("\n")
        ),
        Buffer.from([0xe9]), // row 7: not UTF-8
        Buffer.from("\nr8,\"a quoted, multi-line\nticket\"\n")
      ]))
      const out = path.join(dir, "out")
      const emulator = yield* Emulator.serve({ validationMs: 5 })
      const summary = yield* Pipeline.run(Fixture.make({ input, out, maxBytes: 4_096 }), { stateDir: dir }).pipe(
        Effect.provide(layers(emulator.url, dir))
      )
      assert.strictEqual(summary.state, "completed")
      assert.deepStrictEqual(readParts(out).map((r) => r.id).sort(), ["r1", "r4", "r8"])
      const dead = readParts(path.join(out, "dead-letter")).sort((a, b) => a.position - b.position)
      assert.deepStrictEqual(dead.map((d) => [d.position, d.kind]), [
        [2, "invalid_input"],
        [3, "invalid_input"],
        [5, "invalid_input"],
        [6, "invalid_input"],
        [7, "invalid_input"]
      ])
      const reason = (position: number) => dead.find((d) => d.position === position)!.message as string
      assert.match(reason(2), /tickets\.csv row 2 \(line 3\): field "id"/)
      assert.match(reason(3), /tickets\.csv row 3 \(line 4\): expected 2 fields, got 4/)
      assert.match(reason(5), /duplicate key "r1": first seen at row 1/)
      assert.match(reason(6), /tickets\.csv row 6 \(line 7\): the request is [\d.]+ KiB encoded, over the 4\.0 KiB one request/)
      assert.match(reason(7), /tickets\.csv row 7 \(line 8\): field "text": invalid UTF-8/)
      // the duplicate keeps its record, so nothing of it is lost either
      assert.strictEqual(dead.find((d) => d.position === 5)!.record.text, "the same key again")
    }))

  it.live("empty input: a header-only file and a zero-byte file complete with no rows and no batch", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({})
      for (const content of ["id,text\n", ""]) {
        const dir = tmpDir("empty")
        const input = path.join(dir, "tickets.csv")
        fs.writeFileSync(input, content)
        const summary = yield* Pipeline.run(Fixture.make({ input, out: path.join(dir, "out") }), { stateDir: dir }).pipe(
          Effect.provide(layers(emulator.url, dir))
        )
        assert.strictEqual(summary.state, "completed")
        assert.strictEqual(summary.rows, 0)
        assert.strictEqual(summary.batches, 0)
      }
    }))

  it.live("a missing input file stops the run with the file's name; once the file is there, resume finishes it", () =>
    Effect.gen(function*() {
      const dir = tmpDir("missing")
      const input = path.join(dir, "nope.csv")
      const out = path.join(dir, "out")
      const emulator = yield* Emulator.serve({ validationMs: 5 })
      const error = yield* Pipeline.run(Fixture.make({ input, out }), { stateDir: dir, runId: "missing" }).pipe(
        Effect.provide(layers(emulator.url, dir)),
        Effect.flip
      )
      assert.strictEqual(error._tag, "RunError")
      assert.match(error.message, /nope\.csv: no such file/)
      fs.writeFileSync(input, "id,text\nr1,hello\nr2,world\n")
      const summary = yield* Pipeline.run(Fixture.make({ input, out }), { stateDir: dir, resume: "missing" }).pipe(
        Effect.provide(layers(emulator.url, dir))
      )
      assert.strictEqual(summary.state, "completed")
      assert.strictEqual(readParts(out).length, 2)
    }))
})
