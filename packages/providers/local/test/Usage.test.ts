/**
 * The emulators' usage is the estimate's counting: each provider's adapter
 * encodes a request, that provider's emulator answers it with the local engine,
 * and the input tokens it reports are compared with `Tokens.countRequest` of
 * the same request.
 */
import * as Request from "@offpeak/core/Request"
import * as Tokens from "@offpeak/core/Tokens"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import OpenAI from "openai"
import { messageParams } from "../../anthropic/AnthropicBatch.ts"
import * as AnthropicAnswer from "../../anthropic/emulator/answer.ts"
import { batchLine, generateContentRequest } from "../../google/GeminiBatch.ts"
import * as GeminiAnswer from "../../google/internal/geminiEmulatorAnswer.ts"
import * as Emulator from "../../openai/emulator/Emulator.ts"
import * as OpenAiAnswer from "../../openai/emulator/answer.ts"
import { requestLine } from "../../openai/OpenAiBatch.ts"

const Label = Schema.Struct({
  category: Schema.Literals(["billing", "bug", "account", "feature_request", "shipping", "other"]),
  priority: Schema.Literals(["low", "medium", "high", "urgent"]),
  urgent: Schema.Boolean,
  summary: Schema.String
})

const SYSTEM = "You are a support triage assistant. Read the ticket and classify it. Be concise and accurate."
const WORDS = "invoice refund crash export login password shipping package tracking dark mode editor charged twice bug report urgent team blocked 🎉 naïve café 東京".split(" ")

/** 2,000 tickets of 5 to 300 words, deterministic */
const tickets = Array.from({ length: 2000 }, (_, i) => {
  const n = 5 + ((i * 37) % 296)
  const words: Array<string> = []
  for (let w = 0; w < n; w++) words.push(WORDS[(i * 7 + w * 13) % WORDS.length]!)
  return `Ticket #${i}: ${words.join(" ")}.`
})

const chats = (model: string) =>
  tickets.map((t, i) =>
    Request.chat({
      model,
      system: SYSTEM,
      prompt: t,
      maxTokens: 200,
      ...(i % 2 === 0 ? { output: { name: "Label", schema: Label } } : {})
    })
  )

const report = (provider: string, estimated: number, actual: number) => {
  const error = (estimated - actual) / actual
  console.log(`${provider}: ${tickets.length} requests, estimated ${estimated} input tokens, emulator reported ${actual} (${(error * 100).toFixed(3)} %)`)
  return Math.abs(error)
}

describe("the emulators report input tokens as Tokens estimates them", () => {
  it("OpenAI: the same count, request by request (chat with and without a schema, embeddings)", () => {
    let estimated = 0
    let actual = 0
    for (const [i, request] of chats("gpt-4o-mini").entries()) {
      const line = requestLine(request, `r${i}`)
      const answer = OpenAiAnswer.answer(line.url, line.body, `chatcmpl-${i}`, 0)
      const expected = Tokens.countRequest(request, "openai").tokens
      assert.strictEqual(answer.inputTokens, expected)
      assert.strictEqual((answer.body as { usage: { prompt_tokens: number } }).usage.prompt_tokens, expected)
      estimated += expected
      actual += answer.inputTokens
    }
    for (const [i, t] of tickets.slice(0, 200).entries()) {
      const request = Request.embedding({ model: "text-embedding-3-small", input: t })
      const line = requestLine(request, `e${i}`)
      assert.strictEqual(OpenAiAnswer.answer(line.url, line.body, `e${i}`, 0).inputTokens, Tokens.countRequest(request, "openai").tokens)
    }
    assert.strictEqual(report("openai", estimated, actual), 0)
  })

  it("Anthropic: the same count (the forced tool's schema and its tool-use prompt included)", () => {
    let estimated = 0
    let actual = 0
    for (const [i, request] of chats("claude-haiku-4-5").entries()) {
      const parsed = AnthropicAnswer.parse(messageParams(request as Request.Chat), "2023-06-01")
      if (typeof parsed === "string") throw new Error(parsed)
      const answer = AnthropicAnswer.answer(parsed, { message: `msg_${i}`, toolUse: `toolu_${i}` }, null, "batch")
      estimated += Tokens.countRequest(request, "anthropic").tokens
      actual += answer.inputTokens
    }
    assert.strictEqual(report("anthropic", estimated, actual), 0)
  })

  it("Gemini: within 2 % (the emulator sees the Gemini rendering of the schema, the estimate Anthropic's)", () => {
    let estimated = 0
    let actual = 0
    for (const [i, request] of chats("gemini-2.5-flash").entries()) {
      const answer = GeminiAnswer.generate(generateContentRequest(request as Request.Chat), "models/gemini-2.5-flash", `resp${i}`)
      if ("code" in answer) throw new Error(answer.message)
      estimated += Tokens.countRequest(request, "gemini").tokens
      actual += answer.inputTokens
    }
    for (const [i, t] of tickets.slice(0, 200).entries()) {
      const request = Request.embedding({ model: "gemini-embedding-001", input: t })
      const line = batchLine(request, `e${i}`)
      const answer = GeminiAnswer.embed(line.request, "models/gemini-embedding-001")
      if ("code" in answer) throw new Error(answer.message)
      assert.strictEqual(answer.inputTokens, Tokens.countRequest(request, "gemini").tokens)
    }
    assert.isAtMost(report("gemini", estimated, actual), 0.02)
  })

  it("through the official openai SDK and the emulator's HTTP endpoint: prompt_tokens is the estimate", async () => {
    const request = Request.chat({ model: "gpt-4o-mini", system: SYSTEM, prompt: tickets[5]!, output: { name: "Label", schema: Label } })
    const body = requestLine(request, "x").body as OpenAI.ChatCompletionCreateParamsNonStreaming
    const completion = await Effect.runPromise(
      Effect.scoped(
        Effect.flatMap(Emulator.serve({}), (emulator) =>
          Effect.promise(() => new OpenAI({ apiKey: "test", baseURL: emulator.url, maxRetries: 0 }).chat.completions.create(body)))
      )
    )
    assert.strictEqual(completion.usage?.prompt_tokens, Tokens.countRequest(request, "openai").tokens)
    assert.strictEqual(completion.usage?.completion_tokens, Tokens.countText(completion.choices[0]!.message.content!, "openai", "gpt-4o-mini"))
  })
})
