import * as Engine from "../Engine.ts"
import { assert, describe, it } from "@effect/vitest"
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
    assert.strictEqual(answer.usage.inputTokens, Engine.countTokens("Label the ticket.") + Engine.countTokens("Please summarise the quarterly revenue report for the board"))
    assert.strictEqual(answer.usage.outputTokens, Engine.countTokens(answer.text))
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
    assert.strictEqual(cut.text, full.text.slice(0, 20))
    assert.strictEqual(cut.usage.outputTokens, 5)
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
    assert.isAtMost(Buffer.byteLength(emoji.text), 12)
  })
})

describe("Engine.countTokens", () => {
  it("is ceil(utf8 bytes / 4)", () => {
    assert.strictEqual(Engine.countTokens(""), 0)
    assert.strictEqual(Engine.countTokens("abcd"), 1)
    assert.strictEqual(Engine.countTokens("abcde"), 2)
    assert.strictEqual(Engine.countTokens("é"), 1)
    for (const s of PROMPTS) assert.strictEqual(Engine.countTokens(s), Math.ceil(Buffer.byteLength(s) / 4))
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
