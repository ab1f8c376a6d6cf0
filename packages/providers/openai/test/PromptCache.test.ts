import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import OpenAI, { toFile } from "openai"
import * as Emulator from "../emulator/Emulator.ts"

const SYSTEM = "You label support tickets. Read each ticket and answer with the label that fits best. ".repeat(70)

const withEmulator = <A>(f: (client: OpenAI) => Promise<A>): Promise<A> =>
  Effect.runPromise(Effect.scoped(Effect.flatMap(Emulator.serve({ linesPerSecond: 5_000, validationMs: 10, finalizingMs: 10 }), (emulator) =>
    Effect.promise(() => f(new OpenAI({ apiKey: "test", baseURL: emulator.url, maxRetries: 0 }))))))

describe("the OpenAI emulator's prompt cache", () => {
  it("sync: the second request with the same long system prompt reads it from the cache", () =>
    withEmulator(async (client) => {
      const ask = (t: string) => client.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "system", content: SYSTEM }, { role: "user", content: t }] })
      const a = await ask("ticket one")
      const b = await ask("ticket two")
      assert.strictEqual(a.usage?.prompt_tokens_details?.cached_tokens, 0)
      assert.isAbove(b.usage?.prompt_tokens_details?.cached_tokens ?? 0, 1024)
      console.log(`sync: prompt ${b.usage?.prompt_tokens}, cached ${b.usage?.prompt_tokens_details?.cached_tokens}`)
    }))

  it("batch: lines after the first read the shared prefix; the batch usage sums them", () =>
    withEmulator(async (client) => {
      const rows = Array.from({ length: 50 }, (_, i) => ({
        custom_id: `r${i}`,
        method: "POST",
        url: "/v1/chat/completions",
        body: { model: "gpt-4o-mini", messages: [{ role: "system", content: SYSTEM }, { role: "user", content: `ticket ${i}` }] }
      }))
      const file = await client.files.create({ file: await toFile(Buffer.from(rows.map((r) => JSON.stringify(r)).join("\n") + "\n"), "b.jsonl"), purpose: "batch" })
      let batch = await client.batches.create({ input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h" })
      while (batch.status !== "completed") {
        await new Promise((r) => setTimeout(r, 20))
        batch = await client.batches.retrieve(batch.id)
      }
      const lines = (await (await client.files.content(batch.output_file_id!)).text()).trim().split("\n").map((l) => JSON.parse(l))
      const cached = lines.map((l) => l.response.body.usage.prompt_tokens_details.cached_tokens as number)
      assert.strictEqual(cached.filter((c) => c === 0).length, 1)
      assert.strictEqual(lines.find((l) => l.custom_id === "r0").response.body.usage.prompt_tokens_details.cached_tokens, 0)
      assert.strictEqual(batch.usage?.input_tokens_details.cached_tokens, cached.reduce((a, b) => a + b, 0))
      console.log(`batch: ${cached.filter((c) => c > 0).length} of 50 lines read ${Math.max(...cached)} cached tokens; usage ${JSON.stringify(batch.usage)}`)
    }))
})
