import * as Tokens from "@offpeak/core/Tokens"
import * as Engine from "../Engine.ts"
import { assert, describe, it } from "@effect/vitest"
import { encode } from "gpt-tokenizer/encoding/o200k_base"
import { Schema } from "effect"
import { OpenAiStructuredOutput } from "effect/ai"

const PROMPTS = [
  "I was charged twice for my subscription in March. Please refund the duplicate billing charge.",
  "The app crashes every time I export a report to PDF. This is a bug since version 4.2.",
  "I cannot log in to my account after resetting my password.",
  "Feature request: a dark mode for the editor would be great.",
  "My package has not arrived, the shipping tracking has not moved for 6 days.",
  "",
  "ok",
  "Ünïcödé text — with emoji 🎉 and punctuation!!! (really)",
  ...Array.from({ length: 40 }, (_, i) => `ticket ${i}: ${"lorem ipsum dolor sit amet ".repeat(i % 7)} number ${i * 37}`)
]

const ask = (prompt: string, jsonSchema?: unknown, maxTokens?: number) =>
  Engine.chat({
    model: "gpt-4o-mini",
    messages: [{ role: "system", content: "Label the ticket." }, { role: "user", content: prompt }],
    maxTokens,
    jsonSchema
  })

const Label = Schema.Struct({
  category: Schema.Literals(["billing", "bug", "account", "feature_request", "shipping", "other"]),
  priority: Schema.Literals(["low", "medium", "high", "urgent"]),
  urgent: Schema.Boolean,
  summary: Schema.String
})

const Address = Schema.Struct({ city: Schema.String, zip: Schema.String.check(Schema.isMaxLength(5)) })

const SCHEMAS = {
  label: Label,
  bounded: Schema.Struct({
    confidence: Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 1 })),
    stars: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 5 })),
    count: Schema.Int,
    positive: Schema.Finite.check(Schema.isGreaterThan(0)),
    big: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1000))
  }),
  optional: Schema.Struct({
    title: Schema.String,
    note: Schema.optional(Schema.String),
    score: Schema.optional(Schema.Finite.check(Schema.isBetween({ minimum: -1, maximum: 1 }))),
    flag: Schema.optionalKey(Schema.Boolean)
  }),
  nested: Schema.Struct({
    customer: Schema.Struct({ name: Schema.NonEmptyString, address: Address, vip: Schema.Boolean }),
    shipTo: Address
  }),
  arrays: Schema.Struct({
    tags: Schema.Array(Schema.Literals(["billing", "bug", "account", "shipping"])).check(Schema.isMaxLength(2)),
    keywords: Schema.Array(Schema.String).check(Schema.isMinLength(2), Schema.isMaxLength(4)),
    scores: Schema.Array(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 10 })))
  }),
  union: Schema.Struct({
    result: Schema.Union([
      Schema.Struct({ _tag: Schema.Literal("Refund"), amount: Schema.Finite.check(Schema.isBetween({ minimum: 0, maximum: 500 })) }),
      Schema.Struct({ _tag: Schema.Literal("Escalate"), team: Schema.String }),
      Schema.Struct({ _tag: Schema.Literal("Close") })
    ]),
    value: Schema.Union([Schema.String, Schema.Finite, Schema.Boolean]),
    maybe: Schema.NullOr(Schema.Literals(["yes", "no"]))
  })
} as const

describe("Engine.chat", () => {
  it("is deterministic: the same input gives the same output, byte for byte", () => {
    const { jsonSchema } = OpenAiStructuredOutput.toCodecOpenAI(Label)
    for (const prompt of PROMPTS) {
      assert.deepStrictEqual(ask(prompt), ask(prompt))
      assert.deepStrictEqual(ask(prompt, jsonSchema), ask(prompt, structuredClone(jsonSchema)))
    }
    assert.notStrictEqual(ask(PROMPTS[0]!).text, ask(PROMPTS[1]!).text)
  })

  it("answers plain text from the words of the last user message, with usage", () => {
    const answer = ask("Please summarise the quarterly revenue report for the board")
    assert.strictEqual(answer.finishReason, "stop")
    assert.match(answer.text, /quarterly revenue report/)
    // OpenAI's framing: 3 per message and its role (1 token), 3 to prime the reply, around each message's o200k tokens
    const text = Engine.countTokens("Label the ticket.") + Engine.countTokens("Please summarise the quarterly revenue report for the board")
    assert.strictEqual(answer.usage.inputTokens, 4 + 4 + 3 + text)
    assert.strictEqual(answer.usage.outputTokens, encode(answer.text).length)
    assert.strictEqual(answer.usage.outputTokens, Engine.countTokens(answer.text, "gpt-4o-mini"))
  })

  for (const [name, schema] of Object.entries(SCHEMAS)) {
    it(`${name}: valid against OpenAI's strict schema (toCodecOpenAI) and the draft 2020-12 document`, () => {
      const openai = OpenAiStructuredOutput.toCodecOpenAI(schema as Schema.Codec<unknown>)
      const decodeOpenAi = Schema.decodeUnknownSync(openai.codec as Schema.Codec<unknown, unknown>)
      const document = Schema.toJsonSchemaDocument(schema, { onExcessProperty: "error" })
      const draft = { ...document.schema, $defs: document.definitions }
      const decodeSelf = Schema.decodeUnknownSync(schema as Schema.Codec<unknown, unknown>, { onExcessProperty: "error" })
      for (const prompt of PROMPTS) {
        const a = ask(prompt, openai.jsonSchema)
        assert.strictEqual(a.finishReason, "stop")
        decodeOpenAi(JSON.parse(a.text))
        const b = ask(prompt, draft)
        decodeSelf(JSON.parse(b.text))
      }
    })
  }

  it("follows $ref to #/$defs and #/definitions, including recursive schemas", () => {
    interface Tree {
      readonly value: number
      readonly children: ReadonlyArray<Tree>
    }
    const Tree: Schema.Codec<Tree> = Schema.Struct({
      value: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 9 })),
      children: Schema.Array(Schema.suspend((): Schema.Codec<Tree> => Tree))
    }).annotate({ identifier: "Tree" })
    const Root = Schema.Struct({ a: Address.annotate({ identifier: "Address" }), b: Address.annotate({ identifier: "Address" }), tree: Tree })
    const openai = OpenAiStructuredOutput.toCodecOpenAI(Root)
    const document = Schema.toJsonSchemaDocument(Root)
    const decode = Schema.decodeUnknownSync(Root)
    for (const prompt of PROMPTS.slice(0, 10)) {
      Schema.decodeUnknownSync(openai.codec)(JSON.parse(ask(prompt, openai.jsonSchema).text))
      decode(JSON.parse(ask(prompt, { ...document.schema, $defs: document.definitions }).text))
      // the `definitions` spelling, and the whole document as given by Effect
      const asDefinitions = JSON.parse(JSON.stringify(document.schema).replaceAll("#/$defs/", "#/definitions/"))
      decode(JSON.parse(ask(prompt, { ...asDefinitions, definitions: document.definitions }).text))
      decode(JSON.parse(ask(prompt, document).text))
    }
  })

  it("handles plain JSON Schema keywords: const, enum of any type, string lengths, exclusive bounds, multipleOf, tuples, uniqueItems", () => {
    const schema = {
      type: "object",
      properties: {
        kind: { const: "ticket" },
        level: { enum: [1, 2, 3] },
        code: { type: "string", minLength: 12, maxLength: 14 },
        short: { type: "string", maxLength: 3 },
        ratio: { type: "number", exclusiveMinimum: 0, exclusiveMaximum: 0.01 },
        step: { type: "integer", minimum: 10, maximum: 100, multipleOf: 7 },
        pair: { type: "array", prefixItems: [{ type: "string" }, { type: "boolean" }], items: false },
        unique: { type: "array", items: { enum: ["a", "b", "c"] }, minItems: 3, maxItems: 3, uniqueItems: true },
        when: { type: "string", format: "date-time" },
        nothing: { type: "null" },
        either: { type: ["integer", "null"], minimum: 5, maximum: 6 }
      },
      required: ["kind", "level", "code", "short", "ratio", "step", "pair", "unique", "when", "nothing", "either"],
      additionalProperties: false
    }
    for (const prompt of PROMPTS) {
      const v = JSON.parse(ask(prompt, schema).text)
      assert.strictEqual(v.kind, "ticket")
      assert.include([1, 2, 3], v.level)
      assert.isTrue(v.code.length >= 12 && v.code.length <= 14, v.code)
      assert.isAtMost(v.short.length, 3)
      assert.isTrue(v.ratio > 0 && v.ratio < 0.01, String(v.ratio))
      assert.isTrue(v.step % 7 === 0 && v.step >= 10 && v.step <= 100, String(v.step))
      assert.strictEqual(v.pair.length, 2)
      assert.strictEqual(typeof v.pair[0], "string")
      assert.strictEqual(typeof v.pair[1], "boolean")
      assert.sameMembers(v.unique, ["a", "b", "c"])
      assert.isFalse(Number.isNaN(Date.parse(v.when)))
      assert.isNull(v.nothing)
      assert.isTrue(v.either === null || v.either === 5 || v.either === 6)
      assert.deepStrictEqual(Object.keys(v).sort(), schema.required.slice().sort())
    }
  })

  it("picks the enum value whose words best overlap the last user message", () => {
    const { jsonSchema, codec } = OpenAiStructuredOutput.toCodecOpenAI(Label)
    const label = (prompt: string) => Schema.decodeUnknownSync(codec)(JSON.parse(ask(prompt, jsonSchema).text))
    assert.strictEqual(label("I was charged twice").category, "billing")
    assert.strictEqual(label(PROMPTS[0]!).category, "billing")
    assert.strictEqual(label(PROMPTS[1]!).category, "bug")
    assert.strictEqual(label(PROMPTS[2]!).category, "account")
    assert.strictEqual(label(PROMPTS[3]!).category, "feature_request")
    assert.strictEqual(label(PROMPTS[4]!).category, "shipping")
    assert.strictEqual(label("Urgent: our whole team is blocked").priority, "urgent")
    assert.strictEqual(label("This is urgent").urgent, true)
    // free strings are words of the message
    const summary = label(PROMPTS[2]!).summary
    for (const word of summary.split(" ")) assert.include(PROMPTS[2]!, word)
    // only the last user message counts, not the system prompt
    const answer = Engine.chat({
      model: "m",
      messages: [{ role: "system", content: "billing billing billing" }, { role: "user", content: "The app crashes" }],
      jsonSchema
    })
    assert.strictEqual(JSON.parse(answer.text).category, "bug")
  })

  it("cuts an answer longer than maxTokens and reports finishReason length", () => {
    const { jsonSchema } = OpenAiStructuredOutput.toCodecOpenAI(Label)
    const full = ask(PROMPTS[0]!, jsonSchema)
    const cut = ask(PROMPTS[0]!, jsonSchema, 5)
    assert.strictEqual(cut.finishReason, "length")
    assert.isTrue(full.text.startsWith(cut.text))
    assert.strictEqual(cut.usage.outputTokens, encode(cut.text).length)
    assert.isAtMost(cut.usage.outputTokens, 5)
    // the longest prefix that fits: one more character would not
    assert.isAbove(encode(full.text.slice(0, cut.text.length + 1)).length, 5)
    assert.throws(() => JSON.parse(cut.text))
    const plain = ask(PROMPTS[0]!, undefined, 2)
    assert.strictEqual(plain.finishReason, "length")
    assert.isAtMost(Engine.countTokens(plain.text), 2)
    // exactly at the cap: not cut
    assert.strictEqual(ask(PROMPTS[0]!, jsonSchema, full.usage.outputTokens).finishReason, "stop")
    // never splits a character
    const emoji = Engine.chat({ model: "m", messages: [{ role: "user", content: "🎉🎉🎉 🎉🎉🎉 🎉🎉🎉 🎉🎉🎉" }], maxTokens: 3 })
    assert.strictEqual(emoji.finishReason, "length")
    assert.notInclude(emoji.text, "\uFFFD")
    assert.isAtMost(Engine.countTokens(emoji.text), 3)
  })

  it("counts usage as Tokens counts the request for the model's provider family", () => {
    const { jsonSchema } = OpenAiStructuredOutput.toCodecOpenAI(Label)
    const messages = [{ role: "system", content: "Label the ticket." }, { role: "user", content: PROMPTS[1]! }]
    for (const [model, family] of [["gpt-4o-mini", "openai"], ["claude-haiku-4-5", "anthropic"], ["gemini-2.5-flash", "google"]] as const) {
      for (const schema of [undefined, jsonSchema]) {
        const answer = Engine.chat({ model, messages, jsonSchema: schema })
        const expected = Tokens.countChat({ model, messages, jsonSchema: schema }, family)
        assert.strictEqual(answer.usage.inputTokens, expected.tokens, `${model} ${schema === undefined ? "plain" : "schema"}`)
        assert.strictEqual(answer.usage.outputTokens, Tokens.countText(answer.text, family, model))
      }
    }
    // an explicit provider wins over the model's name (an OpenAI-compatible host serving another model)
    const viaOpenAi = Engine.chat({ model: "claude-haiku-4-5", provider: "openai", messages })
    assert.strictEqual(viaOpenAi.usage.inputTokens, Tokens.countChat({ model: "claude-haiku-4-5", messages }, "openai").tokens)
    // a special token in user text is text
    const special = Engine.chat({ model: "gpt-4o-mini", messages: [{ role: "user", content: "end <|endoftext|> here" }] })
    assert.strictEqual(special.usage.inputTokens, 4 + 3 + encode("end <|endoftext|> here", { disallowedSpecial: new Set() }).length)
  })
})

describe("Engine.countTokens", () => {
  it("is o200k_base without a model, the family's count with one", () => {
    assert.strictEqual(Engine.countTokens(""), 0)
    assert.strictEqual(Engine.countTokens("hello world"), 2)
    for (const s of PROMPTS) {
      assert.strictEqual(Engine.countTokens(s), encode(s).length)
      assert.strictEqual(Engine.countTokens(s, "claude-haiku-4-5"), Math.round(encode(s).length * 1.16))
      assert.strictEqual(Engine.countTokens(s, "gemini-2.5-flash"), encode(s).length)
    }
  })
})

describe("Engine.embed", () => {
  const cosine = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) => a.reduce((s, x, i) => s + x * b[i]!, 0)
  const vec = (input: string, model = "text-embedding-3-small") => Engine.embed({ model, input }).vector

  it("is deterministic, unit length, float32-exact, with the model's dimension", () => {
    assert.deepStrictEqual(vec("hello world"), vec("hello world"))
    assert.strictEqual(vec("hello").length, 1536)
    assert.strictEqual(vec("hello", "text-embedding-3-large").length, 3072)
    assert.strictEqual(vec("hello", "some-local-model").length, 1536)
    assert.strictEqual(Engine.embed({ model: "text-embedding-3-large", input: "hello", dimensions: 256 }).vector.length, 256)
    for (const text of ["", "a", "hello world", PROMPTS[0]!, PROMPTS[7]!]) {
      const v = vec(text)
      assert.closeTo(Math.sqrt(cosine(v, v)), 1, 1e-6)
      for (const x of v) assert.strictEqual(Math.fround(x), x)
    }
    assert.strictEqual(Engine.embed({ model: "m", input: PROMPTS[0]! }).usage.inputTokens, Engine.countTokens(PROMPTS[0]!))
  })

  it("puts texts sharing n-grams closer than unrelated texts", () => {
    const a = vec("I was charged twice for my subscription")
    const b = vec("I was charged two times for my subscription plan")
    const c = vec("The shipment of blue cases arrives tomorrow morning")
    assert.isAbove(cosine(a, b), cosine(a, c))
    assert.isAbove(cosine(a, b), 0.5)
    assert.isBelow(Math.abs(cosine(a, c)), 0.3)
    assert.isAbove(cosine(vec("database migration"), vec("migrating the database")), cosine(vec("database migration"), vec("holiday photos")))
  })

  it("is fast enough for large backfills", () => {
    const start = performance.now()
    for (let i = 0; i < 5_000; i++) Engine.embed({ model: "text-embedding-3-small", input: `row ${i}: ${PROMPTS[i % 5]}` })
    assert.isBelow(performance.now() - start, 2_000)
  })
})

describe("Engine prompt cache", () => {
  // a long shared prefix: a system prompt of well over 1,024 tokens
  const system = (i: number) => `You label support tickets for team ${i}. ` + "Read the ticket carefully and answer with the label that fits best. ".repeat(90)
  const request = (model: string, prefix: number, row: number, cachePrefix?: number): Engine.ChatInput => ({
    model,
    messages: [{ role: "system", content: system(prefix) }, { role: "user", content: `ticket ${row}: my invoice ${row * 7} is wrong` }],
    ...(cachePrefix !== undefined ? { cachePrefix } : {})
  })

  it("OpenAI: a prefix seen shortly before is read, in 128-token steps past 1,024; short prefixes never", () => {
    const cache = Engine.promptCache()
    const first = Engine.chat(request("gpt-4o-mini", 0, 1), { cache })
    assert.strictEqual(first.usage.cachedInputTokens, 0)
    const second = Engine.chat(request("gpt-4o-mini", 0, 2), { cache })
    const prefixTokens = Tokens.countChat(request("gpt-4o-mini", 0, 2), "openai").messages[0]!
    assert.isAtLeast(prefixTokens, 1024)
    assert.strictEqual(second.usage.cachedInputTokens, 1024 + Math.floor((prefixTokens - 1024) / 128) * 128)
    assert.isBelow(second.usage.cachedInputTokens!, second.usage.inputTokens)
    // same usage otherwise, and the answer does not depend on the cache
    const plain = Engine.chat(request("gpt-4o-mini", 0, 2))
    assert.strictEqual(plain.text, second.text)
    assert.strictEqual(plain.usage.inputTokens, second.usage.inputTokens)
    // another model does not share the cache; a short prompt is never cached
    assert.strictEqual(Engine.chat(request("gpt-4.1-mini", 0, 3), { cache }).usage.cachedInputTokens, 0)
    const short = { model: "gpt-4o-mini", messages: [{ role: "system", content: "Label." }, { role: "user", content: "hi" }] }
    Engine.chat(short, { cache })
    assert.strictEqual(Engine.chat(short, { cache }).usage.cachedInputTokens, 0)
    console.log(`OpenAI cache: prefix ${prefixTokens} tokens, read ${second.usage.cachedInputTokens} of ${second.usage.inputTokens}`)
  })

  it("Gemini reads the whole prefix; Anthropic only a marked prefix, written first and read after", () => {
    const gemini = Engine.promptCache()
    Engine.chat(request("gemini-2.5-flash", 0, 1), { cache: gemini })
    const hit = Engine.chat(request("gemini-2.5-flash", 0, 2), { cache: gemini })
    assert.strictEqual(hit.usage.cachedInputTokens, Tokens.countChat(request("gemini-2.5-flash", 0, 2), "google").messages[0])

    const anthropic = Engine.promptCache()
    // unmarked: never cached
    Engine.chat(request("claude-haiku-4-5", 0, 1), { cache: anthropic })
    const unmarked = Engine.chat(request("claude-haiku-4-5", 0, 2), { cache: anthropic })
    assert.strictEqual(unmarked.usage.cachedInputTokens, 0)
    assert.strictEqual(unmarked.usage.cacheWriteInputTokens, 0)
    const write = Engine.chat(request("claude-haiku-4-5", 0, 3, 1), { cache: anthropic })
    const read = Engine.chat(request("claude-haiku-4-5", 0, 4, 1), { cache: anthropic })
    const prefix = Tokens.countChat(request("claude-haiku-4-5", 0, 4), "anthropic").messages[0]!
    assert.deepStrictEqual([write.usage.cacheWriteInputTokens, write.usage.cachedInputTokens], [prefix, 0])
    assert.deepStrictEqual([read.usage.cacheWriteInputTokens, read.usage.cachedInputTokens], [0, prefix])
    assert.strictEqual(read.usage.inputTokens, Tokens.countChat(request("claude-haiku-4-5", 0, 4), "anthropic").tokens)
  })

  it("forgets a prefix after `window` requests or when `capacity` other prefixes were used since", () => {
    const windowed = Engine.promptCache({ window: 3, capacity: 100 })
    Engine.chat(request("gpt-4o-mini", 0, 0), { cache: windowed })
    for (let i = 1; i <= 3; i++) Engine.chat(request("gpt-4o-mini", 1, i), { cache: windowed })
    assert.strictEqual(Engine.chat(request("gpt-4o-mini", 0, 9), { cache: windowed }).usage.cachedInputTokens, 0)

    const small = Engine.promptCache({ window: 1000, capacity: 2 })
    for (const p of [0, 1, 2]) Engine.chat(request("gpt-4o-mini", p, p), { cache: small })
    assert.strictEqual(Engine.chat(request("gpt-4o-mini", 0, 9), { cache: small }).usage.cachedInputTokens, 0)
    assert.isAbove(Engine.chat(request("gpt-4o-mini", 0, 10), { cache: small }).usage.cachedInputTokens!, 0)
  })

  it("cacheUse gives what chat with the cache reports, without answering", () => {
    const viaChat = Engine.promptCache()
    const viaUse = Engine.promptCache()
    for (const [i, prefix] of [0, 1, 0, 0, 2, 1].entries()) {
      const input = request(i % 2 === 0 ? "gpt-4o-mini" : "claude-haiku-4-5", prefix, i, 1)
      const answered = Engine.chat(input, { cache: viaChat })
      const used = Engine.cacheUse(input, viaUse)
      assert.deepStrictEqual(
        [used.inputTokens, used.cache.cachedInputTokens, used.cache.cacheWriteInputTokens],
        [answered.usage.inputTokens, answered.usage.cachedInputTokens, answered.usage.cacheWriteInputTokens]
      )
    }
    assert.deepStrictEqual(viaChat.stats(), viaUse.stats())
  })

  it("grouping requests by prefix raises the hit share over a shuffled order (10 prefixes, deterministic)", () => {
    const rows = Array.from({ length: 400 }, (_, i) => ({ prefix: i % 10, row: i }))
    // a fixed shuffle
    const shuffled = rows.map((r, i) => ({ r, k: (i * 7919) % 401 })).sort((a, b) => a.k - b.k).map((x) => x.r)
    const grouped = [...shuffled].sort((a, b) => a.prefix - b.prefix)
    const share = (order: typeof rows) => {
      const cache = Engine.promptCache()
      for (const { prefix, row } of order) Engine.chat(request("gpt-4o-mini", prefix, row), { cache })
      const s = cache.stats()
      return { hits: s.hits / s.requests, cached: s.cachedInputTokens / s.inputTokens }
    }
    const a = share(shuffled)
    const b = share(grouped)
    const again = share(shuffled)
    assert.deepStrictEqual(a, again)
    assert.isAbove(b.hits, a.hits)
    assert.isAbove(b.hits, 0.95)
    console.log(
      `10 prefixes over 400 rows, capacity 8: hit share shuffled ${(a.hits * 100).toFixed(1)} % (cached input ${(a.cached * 100).toFixed(1)} %), ` +
        `grouped ${(b.hits * 100).toFixed(1)} % (cached input ${(b.cached * 100).toFixed(1)} %)`
    )
  })
})
