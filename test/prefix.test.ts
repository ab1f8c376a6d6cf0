/**
 * Prefix grouping: ten long shared prompt prefixes over a shuffled input. Grouped, requests that share a prefix fill
 * the same batches, and the emulator's prompt cache (the providers' model: a prefix of at least 1,024 tokens, a few
 * prefixes kept) answers far more of the input from cache; the share with and without it is measured on the OpenAI
 * emulator through the official SDK.
 */
import * as Ledger from "@offpeak/core/Ledger"
import * as Pipeline from "@offpeak/core/Pipeline"
import * as Request from "@offpeak/core/Request"
import type * as Source from "@offpeak/core/Source"
import * as SqliteClient from "@offpeak/core/SqliteClient"
import { Jsonl } from "@offpeak/io/jsonl"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema, Stream } from "effect"
import * as path from "node:path"
import { prng, text, tmpDir } from "./support/files.ts"
import * as Providers from "./support/providers.ts"

const Doc = Schema.Struct({ id: Schema.String, topic: Schema.Number, question: Schema.String })
type Doc = typeof Doc.Type

describe("prefix grouping (OpenAI emulator)", () => {
  it.live("10 shared prefixes over a shuffled input: grouping raises the cached-input share", () =>
    Effect.gen(function*() {
      const rand = prng(7)
      // ten "documents" of ~1,500 tokens each, asked many short questions
      const documents = Array.from({ length: 10 }, (_, i) => `Document ${i}. ${text(rand, 1_400)}`)
      const rows: Array<Source.Item<Doc>> = Array.from({ length: 600 }, (_, i) => ({
        _tag: "Row",
        position: i + 1,
        value: { id: `q${i + 1}`, topic: Math.floor(rand() * 10), question: `Question ${i}: ${text(rand, 12)}?` }
      }))
      const share = (groupByPrefix: boolean) =>
        Effect.gen(function*() {
          const dir = tmpDir(`prefix-${groupByPrefix}`)
          const emulator = yield* Providers.openai.serve({})
          const pipeline = Pipeline.make({
            name: "questions",
            source: { name: "questions", schema: Doc, read: Stream.fromIterable(rows) },
            key: (d) => d.id,
            request: (d) =>
              Request.chat({
                model: "gpt-4o-mini",
                messages: [{ role: "system", content: documents[d.topic]! }, { role: "user", content: d.question }],
                cachePrefix: 1,
                maxTokens: 50
              }),
            sink: Jsonl.sink({ dir: path.join(dir, "out") }),
            batch: { maxRequests: 60, maxInFlight: 1, groupByPrefix, flushAfter: "200 millis" }
          })
          const summary = yield* Pipeline.run(pipeline, { stateDir: dir }).pipe(
            Effect.provide(Layer.mergeAll(
              Providers.openai.layer(emulator.url),
              Ledger.layer.pipe(Layer.provide(SqliteClient.layer({ filename: path.join(dir, "state.db") })))
            ))
          )
          assert.strictEqual(summary.state, "completed")
          assert.strictEqual(summary.succeeded, 600)
          return summary.usage.cachedInputTokens / summary.usage.inputTokens
        }).pipe(Effect.scoped)
      const mixed = yield* share(false)
      const grouped = yield* share(true)
      console.log(
        `prefix grouping: cached-input share ${(100 * mixed).toFixed(1)} % mixed, ${(100 * grouped).toFixed(1)} % grouped ` +
          `(600 questions over 10 documents, shuffled)`
      )
      // the emulator keeps 8 prefixes: mixed, the 10 thrash it; grouped, a prefix's misses are its first requests only
      assert.isBelow(1 - grouped, (1 - mixed) / 2)
    }), { timeout: 120_000 })
})
