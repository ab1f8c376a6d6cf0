import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { AnthropicStructuredOutput, OpenAiStructuredOutput } from "effect/ai"
import { encode as cl100k, encodeChat as cl100kChat } from "gpt-tokenizer/encoding/cl100k_base"
import { countTokens as o200kCountTokens, encode as o200k } from "gpt-tokenizer/encoding/o200k_base"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Request from "../src/Request.ts"
import * as Tokens from "../src/Tokens.ts"

const ORDINARY = { disallowedSpecial: new Set<string>() }

const TEXTS = [
  "hello world",
  "The quick brown fox jumps over the lazy dog.",
  "I was charged twice for my subscription in March. Please refund the duplicate billing charge.",
  "Ünïcödé text — with emoji 🎉🦊 and punctuation!!! (really)",
  "東京の天気はどうですか？ 今日は晴れです。",
  "export const f = <A>(a: A): Effect.Effect<A> => Effect.succeed(a) // code\n\tif (x) { return 1 }",
  "   leading and trailing spaces   \n\n\n",
  "a".repeat(5000),
  "x",
  ""
]

// OpenAI's cookbook example ("How to count tokens with tiktoken", section 6): prompt tokens reported by the API
const COOKBOOK: ReadonlyArray<{ readonly role: "system" | "user"; readonly name?: string; readonly content: string }> = [
  { role: "system", content: "You are a helpful, pattern-following assistant that translates corporate jargon into plain English." },
  { role: "system", name: "example_user", content: "New synergies will help drive top-line growth." },
  { role: "system", name: "example_assistant", content: "Things working well together will increase revenue." },
  {
    role: "system",
    name: "example_user",
    content: "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."
  },
  { role: "system", name: "example_assistant", content: "Let's talk later when we're less busy about how to do better." },
  { role: "user", content: "This late pivot means we don't have time to boil the ocean for the client deliverable." }
]

const Label = Schema.Struct({
  category: Schema.Literals(["billing", "bug", "account", "feature_request", "shipping", "other"]),
  priority: Schema.Literals(["low", "medium", "high", "urgent"]),
  summary: Schema.String
})

describe("Tokens: OpenAI encodings", () => {
  it("counts text exactly as gpt-tokenizer encodes it: o200k_base for current models, cl100k_base for older ones", () => {
    for (const text of TEXTS) {
      for (const model of ["gpt-4o-mini", "gpt-4o", "gpt-5", "gpt-4.1-nano", "o3-mini", "ft:gpt-4o-mini:acme::abc123"]) {
        assert.strictEqual(Tokens.countText(text, "openai", model), o200k(text).length, `${model}: ${text.slice(0, 20)}`)
      }
      for (const model of ["gpt-4", "gpt-4-0613", "gpt-3.5-turbo", "text-embedding-3-small", "text-embedding-ada-002"]) {
        assert.strictEqual(Tokens.countText(text, "openai", model), cl100k(text).length, `${model}: ${text.slice(0, 20)}`)
      }
    }
    assert.strictEqual(Tokens.encodingOf("gpt-4o-mini"), "o200k_base")
    assert.strictEqual(Tokens.encodingOf("gpt-5"), "o200k_base")
    assert.strictEqual(Tokens.encodingOf("gpt-4"), "cl100k_base")
    assert.strictEqual(Tokens.encodingOf("text-embedding-3-large"), "cl100k_base")
    // known values
    assert.strictEqual(Tokens.countText("hello world", "openai", "gpt-4o"), 2)
    assert.strictEqual(Tokens.countText("The quick brown fox jumps over the lazy dog.", "openai", "gpt-4o"), 10)
  })

  it("matches the prompt tokens the API reports for OpenAI's cookbook example (gpt-4o: 124, gpt-4-0613: 129)", () => {
    // the cookbook's messages carry `name`s (1 token each plus the name), which offpeak's requests do not have
    const names = (encode: (s: string) => Array<number>) =>
      COOKBOOK.reduce((n, m) => n + (m.name === undefined ? 0 : encode(m.name).length + 1), 0)
    const count = (model: string) =>
      Tokens.countRequest(Request.chat({ model, messages: COOKBOOK.map(({ content, role }) => ({ content, role })) }), "openai")
    const gpt4o = count("gpt-4o")
    const gpt4 = count("gpt-4-0613")
    console.log(`cookbook example: gpt-4o ${gpt4o.tokens + names(o200k)} (API: 124), gpt-4-0613 ${gpt4.tokens + names(cl100k)} (API: 129)`)
    assert.strictEqual(gpt4o.tokens + names(o200k), 124)
    assert.strictEqual(gpt4.tokens + names(cl100k), 129)
    assert.isTrue(gpt4o.exact)
    assert.strictEqual(gpt4o.method, "o200k_base")
    assert.strictEqual(gpt4o.tokens, gpt4o.fixed + gpt4o.trailing + gpt4o.messages.reduce((a, b) => a + b, 0))
    // and gpt-tokenizer's own chat encoding for gpt-4 (ChatML) agrees
    const chat = COOKBOOK.map(({ content, role }) => ({ content, role }))
    assert.strictEqual(gpt4.tokens, cl100kChat(chat, "gpt-4").length)
  })

  it("never throws on special tokens in user text: they count as the characters they are", () => {
    const text = "Ignore this <|endoftext|> and <|im_start|>system<|im_sep|> or <|endofprompt|><|fim_prefix|> please"
    assert.throws(() => o200kCountTokens(text)) // why the option matters: the library's default refuses them
    assert.strictEqual(Tokens.countText(text, "openai", "gpt-4o-mini"), o200k(text, ORDINARY).length)
    assert.strictEqual(Tokens.countText(text, "openai", "gpt-4"), cl100k(text, ORDINARY).length)
    assert.isAbove(Tokens.countText(text, "openai", "gpt-4o-mini"), 20) // as text, not 1 token each
    const count = Tokens.countRequest(Request.chat({ model: "gpt-4o-mini", system: "<|endoftext|>", prompt: text }), "openai")
    assert.strictEqual(count.tokens, 4 + o200k("<|endoftext|>", ORDINARY).length + 4 + o200k(text, ORDINARY).length + 3)
    assert.strictEqual(Tokens.countText(text, "anthropic", "claude-haiku-4-5"), Math.round(o200k(text, ORDINARY).length * 1.16))
  })

  it("counts a structured output's schema as the adapter sends it; the count is then an estimate", () => {
    const plain = Tokens.countRequest(Request.chat({ model: "gpt-4o-mini", prompt: "The app crashes" }), "openai")
    const request = Request.chat({ model: "gpt-4o-mini", prompt: "The app crashes", output: { name: "Label", schema: Label } })
    const structured = Tokens.countRequest(request, "openai")
    const schemaJson = JSON.stringify(OpenAiStructuredOutput.toCodecOpenAI(Label).jsonSchema)
    assert.strictEqual(structured.schema, o200k(schemaJson).length)
    assert.strictEqual(structured.tokens, plain.tokens + structured.schema)
    assert.isFalse(structured.exact)
    // Anthropic: the forced tool's input_schema, ×1.30, plus the 313-token tool-use system prompt
    const anthropic = Tokens.countRequest({ ...request, model: "claude-haiku-4-5" }, "anthropic")
    const toolSchema = JSON.stringify(AnthropicStructuredOutput.toCodecAnthropic(Label).jsonSchema)
    assert.strictEqual(anthropic.schema, Math.round(o200k(toolSchema).length * 1.3))
    assert.strictEqual(anthropic.fixed, anthropic.schema + 313)
    // a non-object root is wrapped in { value } as the Anthropic adapter does
    const wrapped = Tokens.countRequest(
      Request.chat({ model: "claude-haiku-4-5", prompt: "x", output: { name: "N", schema: Schema.Array(Schema.String) } }),
      "anthropic"
    )
    assert.isAbove(wrapped.schema, 0)
    // the same schema object is rendered once
    const start = performance.now()
    for (let i = 0; i < 10_000; i++) Tokens.countRequest(request, "openai")
    const perRequestUs = (performance.now() - start) * 100 / 1000
    console.log(`structured request counted in ${perRequestUs.toFixed(1)} µs (schema rendered once)`)
    assert.isBelow(perRequestUs, 200)
  })

  it("counts embeddings as their input alone", () => {
    const count = Tokens.countRequest(Request.embedding({ model: "text-embedding-3-small", input: TEXTS[2]! }), "openai")
    assert.deepStrictEqual([count.tokens, count.exact, count.method], [cl100k(TEXTS[2]!).length, true, "cl100k_base"])
    const gemini = Tokens.countRequest(Request.embedding({ model: "gemini-embedding-001", input: TEXTS[2]! }), "gemini")
    assert.deepStrictEqual([gemini.tokens, gemini.exact], [o200k(TEXTS[2]!).length, false])
  })

  it("marks a model the tokenizer does not know as an estimate", () => {
    const count = Tokens.countRequest(Request.chat({ model: "llama-3.1-70b", prompt: "hello" }), "openai")
    assert.isFalse(count.exact)
    assert.match(count.method, /unknown to the tokenizer/)
  })
})

describe("Tokens: families", () => {
  it("takes the family from the provider name, else from the model", () => {
    assert.strictEqual(Tokens.familyOf("openai", "claude-haiku-4-5"), "openai")
    assert.strictEqual(Tokens.familyOf("azure", "my-deployment"), "openai")
    assert.strictEqual(Tokens.familyOf("anthropic", "x"), "anthropic")
    assert.strictEqual(Tokens.familyOf("gemini", "x"), "google")
    assert.strictEqual(Tokens.familyOf("vertex", "x"), "google")
    assert.strictEqual(Tokens.familyOf(undefined, "claude-sonnet-4-5"), "anthropic")
    assert.strictEqual(Tokens.familyOf(undefined, "models/gemini-2.5-flash"), "google")
    assert.strictEqual(Tokens.familyOf("local", "publishers/google/models/gemini-2.5-pro"), "google")
    assert.strictEqual(Tokens.familyOf(undefined, "text-embedding-005"), "google")
    assert.strictEqual(Tokens.familyOf(undefined, "gpt-4o-mini"), "openai")
  })
})

describe("Tokens: approximations for providers without an offline tokenizer", () => {
  it("lands near the providers' published counts (measured error printed)", () => {
    const cases = [
      {
        what: "Anthropic count_tokens guide: system 'You are a scientist', user 'Hello, Claude' (claude-sonnet-4-5)",
        published: 14,
        counted: Tokens.countRequest(Request.chat({ model: "claude-sonnet-4-5", system: "You are a scientist", prompt: "Hello, Claude" }), "anthropic")
          .tokens
      },
      {
        what: "Gemini API reference: countTokens('The quick brown fox jumps over the lazy dog.')",
        published: 10,
        counted: Tokens.countText("The quick brown fox jumps over the lazy dog.", "google", "gemini-1.5-flash")
      },
      {
        what: "Gemini API reference: promptTokenCount of the same prompt sent to generateContent",
        published: 11,
        counted: Tokens.countRequest(Request.chat({ model: "gemini-1.5-flash", prompt: "The quick brown fox jumps over the lazy dog." }), "gemini")
          .tokens
      },
      {
        what: "Vertex AI local tokenizer: 'Hello World!' (gemini-1.5-flash)",
        published: 3,
        counted: Tokens.countText("Hello World!", "google", "gemini-1.5-flash")
      }
    ]
    let worst = 0
    for (const c of cases) {
      const error = (c.counted - c.published) / c.published
      worst = Math.max(worst, Math.abs(error))
      console.log(`${c.what}: published ${c.published}, offpeak ${c.counted} (${(error * 100).toFixed(1)} %)`)
    }
    assert.isAtMost(worst, 0.1)
    const claude = Tokens.countRequest(Request.chat({ model: "claude-haiku-4-5", prompt: "hi" }), "anthropic")
    assert.isFalse(claude.exact)
    assert.match(claude.method, /approximation/)
  })
})

describe("Tokens.Counter", () => {
  const requests = Array.from({ length: 40 }, (_, i) =>
    Request.chat({ model: "claude-haiku-4-5", system: "Classify the ticket.", prompt: `ticket ${i}: ${TEXTS[i % 7]}` })
  )

  it.effect("offline by default: the same as countRequest", () =>
    Effect.gen(function*() {
      const counter = yield* Tokens.Counter
      for (const r of requests.slice(0, 5)) assert.deepStrictEqual(yield* counter.count(r, "anthropic"), Tokens.countRequest(r, "anthropic"))
    }).pipe(Effect.provide(Tokens.layer)))

  it.effect("with a provider's count-tokens call: exact on the sample, then offline counts scaled by the measured ratio", () =>
    Effect.gen(function*() {
      let calls = 0
      // a provider whose tokenizer gives 25 % more than offpeak's approximation
      const call = (r: Request.Request) =>
        Effect.sync(() => {
          calls++
          return Math.round(Tokens.countRequest(r, "anthropic").tokens * 1.25)
        })
      const counter = Tokens.make({ calls: { anthropic: call }, calibrationSample: 10 })
      const counts = []
      for (const r of requests) counts.push(yield* counter.count(r, "anthropic"))
      assert.strictEqual(calls, 10)
      assert.isTrue(counts.slice(0, 10).every((c) => c.exact))
      assert.isTrue(counts.slice(10).every((c) => !c.exact && /calibrated ×1\.2\d\d on 10/.test(c.method)))
      let error = 0
      for (let i = 10; i < requests.length; i++) {
        const truth = Math.round(Tokens.countRequest(requests[i]!, "anthropic").tokens * 1.25)
        error = Math.max(error, Math.abs(counts[i]!.tokens - truth) / truth)
      }
      console.log(`calibrated counts: worst error ${(error * 100).toFixed(2)} % against the provider's count`)
      assert.isBelow(error, 0.03)
      // a provider without a call stays offline; a failing call falls back to the offline count
      const failing = Tokens.make({ calls: { anthropic: () => Effect.fail("network down") } })
      assert.deepStrictEqual(yield* failing.count(requests[0]!, "anthropic"), Tokens.countRequest(requests[0]!, "anthropic"))
      assert.deepStrictEqual(yield* counter.count(requests[0]!, "openai"), Tokens.countRequest(requests[0]!, "openai"))
    }))
})

describe("Tokens: speed", () => {
  it("counts the input of a large job fast (MB/s printed)", () => {
    // real text: the .d.ts and .md files of installed packages, cut into ~2 KB requests
    const files: Array<string> = []
    const walk = (dir: string) => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, entry.name)
        if (entry.isDirectory()) walk(p)
        else if (/\.(d\.ts|md)$/.test(entry.name)) files.push(p)
      }
    }
    walk(path.resolve(import.meta.dirname, "../../../node_modules/effect/dist"))
    files.sort()
    const chunks: Array<string> = []
    let bytes = 0
    for (const f of files) {
      const text = fs.readFileSync(f, "utf8")
      for (let i = 0; i < text.length && bytes < 6_000_000; i += 2000) {
        const chunk = text.slice(i, i + 2000)
        chunks.push(chunk)
        bytes += Buffer.byteLength(chunk)
      }
      if (bytes >= 6_000_000) break
    }
    const system = "You label support tickets. Answer with one category and a priority. ".repeat(12)
    Tokens.preload()
    for (const [provider, family] of [["openai", "o200k_base"], ["anthropic", "approximation"]] as const) {
      // distinct prompts per pass (each row's text is new; the system prompt repeats, as in a real job)
      const requests = chunks.map((prompt, i) => Request.chat({ model: "gpt-4o-mini", system, prompt: `${provider} row ${i}: ${prompt}`, maxTokens: 200 }))
      const start = performance.now()
      let tokens = 0
      for (const r of requests) tokens += Tokens.countRequest(r, provider).tokens
      const seconds = (performance.now() - start) / 1000
      const mbps = bytes / 1e6 / seconds
      console.log(
        `${provider} (${family}): ${requests.length} requests, ${(bytes / 1e6).toFixed(1)} MB of prompts (+ a ${system.length}-char system prompt each) ` +
          `in ${seconds.toFixed(2)} s: ${mbps.toFixed(2)} MB/s, ${Math.round(requests.length / seconds)} requests/s, ${tokens} tokens`
      )
      assert.isAbove(mbps, 1)
    }
  })
})
