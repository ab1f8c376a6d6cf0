/**
 * The Anthropic Message Batches emulator, driven only through the official
 * `@anthropic-ai/sdk` (and plain fetch where the SDK hides the wire).
 */
import Anthropic from "@anthropic-ai/sdk"
import type { MessageBatch, MessageBatchIndividualResponse } from "@anthropic-ai/sdk/resources/messages/batches"
import type { MessageCreateParamsNonStreaming } from "@anthropic-ai/sdk/resources/messages/messages"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Engine from "../../local/Engine.ts"
import * as Emulator from "../emulator/Emulator.ts"
import * as Batch from "../emulator/batch.ts"
import * as Create from "../emulator/create.ts"
import type * as Store from "../emulator/store.ts"

// ===== helpers =====

const tmp = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), `offpeak-anthropic-test-${prefix}-`))

type ServeOptions = Parameters<typeof Emulator.serve>[0]

const sdk = (url: string, options: { readonly maxRetries?: number; readonly defaultHeaders?: Record<string, string | null> } = {}) =>
  new Anthropic({ apiKey: "test", baseURL: url, maxRetries: options.maxRetries ?? 0, defaultHeaders: options.defaultHeaders ?? {} })

/** runs `f` against a fresh emulator, closed afterwards */
const withEmulator = <A>(options: ServeOptions, f: (client: Anthropic, emulator: Emulator.Handle) => Promise<A>): Promise<A> =>
  Effect.runPromise(
    Effect.scoped(
      Effect.flatMap(Emulator.serve(options), (emulator) =>
        Effect.tryPromise({ try: () => f(sdk(emulator.url), emulator), catch: (e) => e }))
    )
  )

const poll = async (
  client: Anthropic,
  id: string,
  until: (b: MessageBatch) => boolean = (b) => b.processing_status === "ended",
  timeoutMs = 20_000
) => {
  const start = Date.now()
  const seen: Array<string> = []
  while (true) {
    const batch = await client.messages.batches.retrieve(id)
    if (seen.at(-1) !== batch.processing_status) seen.push(batch.processing_status)
    if (until(batch)) return { batch, seen }
    if (Date.now() - start > timeoutMs) throw new Error(`batch ${id} still ${batch.processing_status} after ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 15))
  }
}

const collect = async (client: Anthropic, id: string) => {
  const out: Array<MessageBatchIndividualResponse> = []
  for await (const line of await client.messages.batches.results(id)) out.push(line)
  return out
}

const TOPICS = [
  "I was charged twice for my subscription, please refund the duplicate billing charge",
  "The app crashes on export, this is a bug",
  "I cannot log in to my account after resetting my password",
  "Feature request: a dark mode would be great",
  "My package has not arrived, shipping tracking is stuck"
]

const LABEL_SCHEMA: { type: "object"; [key: string]: unknown } = {
  type: "object",
  properties: {
    category: { type: "string", enum: ["billing", "bug", "account", "feature_request", "shipping", "other"] },
    urgent: { type: "boolean" },
    summary: { type: "string" }
  },
  required: ["category", "urgent", "summary"],
  additionalProperties: false
}

type Request = { custom_id: string; params: MessageCreateParamsNonStreaming }

/** a varied request: plain, with a system prompt, multi-turn, forced tool, stop sequences, a cached prefix */
const request = (i: number): Request => {
  const prompt = `#${i}: ${TOPICS[i % TOPICS.length]}`
  const base = { model: "claude-sonnet-4-6", max_tokens: 300 }
  switch (i % 5) {
    case 0:
      return { custom_id: `req-${i}`, params: { ...base, messages: [{ role: "user", content: prompt }] } }
    case 1:
      return {
        custom_id: `req-${i}`,
        params: {
          ...base,
          system: "Label the ticket.",
          messages: [{ role: "user", content: prompt }],
          tools: [{ name: "label", input_schema: LABEL_SCHEMA }],
          tool_choice: { type: "tool", name: "label" }
        }
      }
    case 2:
      return {
        custom_id: `req-${i}`,
        params: {
          ...base,
          system: [{ type: "text", text: "You are terse." }, { type: "text", text: "Answer in English." }],
          messages: [
            { role: "user", content: "Hello" },
            { role: "assistant", content: "Hi, how can I help?" },
            { role: "user", content: [{ type: "text", text: prompt }] }
          ]
        }
      }
    case 3:
      return { custom_id: `req-${i}`, params: { ...base, max_tokens: 3, messages: [{ role: "user", content: prompt }] } }
    default:
      return {
        custom_id: `req-${i}`,
        params: {
          ...base,
          system: [{ type: "text", text: "A long shared instruction block. ".repeat(20), cache_control: { type: "ephemeral" } }],
          stop_sequences: ["twice"],
          messages: [{ role: "user", content: prompt }]
        }
      }
  }
}

const textOf = (content: unknown): string =>
  typeof content === "string"
    ? content
    : (content as Array<{ text?: string }>).map((b) => b.text ?? "").filter((t) => t.length > 0).join("\n")

/** what the engine answers for a request's params, independently of the emulator */
const expected = (params: MessageCreateParamsNonStreaming) => {
  const system = params.system === undefined ? undefined : textOf(params.system)
  const tool = params.tool_choice?.type === "tool"
    ? (params.tools as Array<{ name: string; input_schema: unknown }>).find((t) => t.name === (params.tool_choice as { name: string }).name)
    : undefined
  const out = Engine.chat({
    model: params.model,
    messages: [
      ...(system !== undefined ? [{ role: "system", content: system }] : []),
      ...params.messages.map((m) => ({ role: m.role, content: textOf(m.content) }))
    ],
    maxTokens: params.max_tokens,
    jsonSchema: tool?.input_schema
  })
  if (tool !== undefined) {
    return out.finishReason === "stop"
      ? { tool: JSON.parse(out.text), stop_reason: "tool_use", output_tokens: out.usage.outputTokens, input_tokens: out.usage.inputTokens }
      : { tool: {}, stop_reason: "max_tokens", output_tokens: out.usage.outputTokens, input_tokens: out.usage.inputTokens }
  }
  const stops = (params.stop_sequences ?? []).map((s) => [s, out.text.indexOf(s)] as const).filter(([, at]) => at >= 0)
  if (stops.length > 0) {
    const [s, at] = stops.sort((a, b) => a[1] - b[1])[0]!
    const text = out.text.slice(0, at)
    return { text, stop_reason: "stop_sequence", stop_sequence: s, output_tokens: Engine.countTokens(text), input_tokens: out.usage.inputTokens }
  }
  return {
    text: out.text,
    stop_reason: out.finishReason === "length" ? "max_tokens" : "end_turn",
    stop_sequence: null,
    output_tokens: out.usage.outputTokens,
    input_tokens: out.usage.inputTokens
  }
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/

const checkMessage = (params: MessageCreateParamsNonStreaming, message: any, tier: "batch" | "standard") => {
  const want = expected(params)
  assert.match(message.id, /^msg_01\w+$/)
  assert.strictEqual(message.type, "message")
  assert.strictEqual(message.role, "assistant")
  assert.strictEqual(message.model, params.model)
  assert.strictEqual(message.stop_reason, want.stop_reason)
  assert.strictEqual(message.usage.output_tokens, want.output_tokens)
  assert.strictEqual(message.usage.service_tier, tier)
  const u = message.usage
  assert.strictEqual(u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens, want.input_tokens)
  if ("tool" in want) {
    assert.strictEqual(message.content.length, 1)
    assert.strictEqual(message.content[0].type, "tool_use")
    assert.match(message.content[0].id, /^toolu_01\w+$/)
    assert.strictEqual(message.content[0].name, "label")
    assert.deepStrictEqual(message.content[0].input, want.tool)
  } else {
    assert.deepStrictEqual(message.content, [{ type: "text", text: want.text, citations: null }])
    assert.strictEqual(message.stop_sequence, want.stop_sequence)
  }
}

// ===== tests =====

describe("Emulator (official @anthropic-ai/sdk)", () => {
  it("runs a batch to ended; results() at the absolute results_url answer each request from its own params, shuffled", async () => {
    const requests = Array.from({ length: 200 }, (_, i) => request(i))
    await withEmulator({ linesPerSecond: 2_000 }, async (client, emulator) => {
      assert.match(emulator.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      const created = await client.messages.batches.create({ requests })
      assert.match(created.id, /^msgbatch_01\w{22}$/)
      assert.strictEqual(created.type, "message_batch")
      assert.strictEqual(created.processing_status, "in_progress")
      assert.deepStrictEqual(created.request_counts, { processing: 200, succeeded: 0, errored: 0, canceled: 0, expired: 0 })
      assert.match(created.created_at, RFC3339)
      assert.strictEqual(Date.parse(created.expires_at) - Date.parse(created.created_at), 24 * 3_600_000)
      for (const key of ["ended_at", "archived_at", "cancel_initiated_at", "results_url"] as const) assert.isNull(created[key], key)
      const noResults = await client.messages.batches.results(created.id).catch((e) => e)
      assert.instanceOf(noResults, Anthropic.AnthropicError)
      assert.match(noResults.message, /No batch `results_url`/)

      const { batch, seen } = await poll(client, created.id)
      assert.strictEqual(seen.at(-1), "ended")
      assert.isTrue(seen.every((s) => s === "in_progress" || s === "ended"), seen.join())
      assert.deepStrictEqual(batch.request_counts, { processing: 0, succeeded: 200, errored: 0, canceled: 0, expired: 0 })
      assert.match(batch.ended_at!, RFC3339)
      assert.isAtLeast(Date.parse(batch.ended_at!), Date.parse(batch.created_at))
      assert.strictEqual(batch.results_url, `${emulator.url}/v1/messages/batches/${batch.id}/results`)

      const lines = await collect(client, batch.id)
      assert.strictEqual(lines.length, 200)
      assert.notDeepEqual(lines.map((l) => l.custom_id), requests.map((r) => r.custom_id), "results are shuffled")
      assert.sameMembers(lines.map((l) => l.custom_id), requests.map((r) => r.custom_id))
      const byId = new Map(requests.map((r) => [r.custom_id, r]))
      for (const line of lines) {
        assert.strictEqual(line.result.type, "succeeded")
        if (line.result.type === "succeeded") checkMessage(byId.get(line.custom_id)!.params, line.result.message, "batch")
      }
      // the crash ticket is labelled bug; the cached system prefix is written once, then read
      const bug = lines.find((l) => l.custom_id === "req-1")!
      assert.strictEqual((bug.result as any).message.content[0].input.category, "bug")
      const cached = lines.filter((l) => Number(l.custom_id.slice(4)) % 5 === 4).map((l) => (l.result as any).message.usage)
      assert.strictEqual(cached.filter((u) => u.cache_creation_input_tokens > 0).length, 1)
      assert.strictEqual(cached.filter((u) => u.cache_read_input_tokens > 0).length, cached.length - 1)
      // the same bytes over plain HTTP, as application/x-jsonl
      const raw = await fetch(batch.results_url!, { headers: { "x-api-key": "k", "anthropic-version": "2023-06-01" } })
      assert.strictEqual(raw.status, 200)
      assert.match(raw.headers.get("content-type") ?? "", /^application\/x-jsonl/)
      assert.deepStrictEqual((await raw.text()).trim().split("\n").map((l) => JSON.parse(l)), lines)
    })
  })

  it("answers errored lines: injected failures by type, and params the API version refuses", async () => {
    const requests = Array.from({ length: 300 }, (_, i) => request(i))
    await withEmulator(
      { lineFailures: [{ type: "overloaded_error", rate: 0.1 }, { type: "invalid_request_error", rate: 0.05 }] },
      async (client) => {
        const { batch } = await poll(client, (await client.messages.batches.create({ requests })).id)
        const lines = await collect(client, batch.id)
        const errored = lines.filter((l) => l.result.type === "errored")
        const counts = batch.request_counts
        assert.strictEqual(counts.errored, errored.length)
        assert.strictEqual(counts.succeeded + counts.errored, 300)
        const types = errored.map((l) => (l.result as any).error.error.type)
        assert.isAbove(types.filter((t) => t === "overloaded_error").length, 10)
        assert.isAbove(types.filter((t) => t === "invalid_request_error").length, 3)
        for (const l of errored) {
          const error = (l.result as any).error
          assert.strictEqual(error.type, "error")
          assert.isString(error.error.message)
          assert.match(error.request_id, /^req_01/)
        }
        // the same requests in a new batch draw afresh
        const again = await poll(client, (await client.messages.batches.create({ requests })).id)
        const failedAgain = (await collect(client, again.batch.id)).filter((l) => l.result.type === "errored").map((l) => l.custom_id)
        assert.notDeepEqual(new Set(failedAgain), new Set(errored.map((l) => l.custom_id)))
      }
    )
    // temperature: refused per line under 2026-10-21 (what this SDK sends), accepted under 2023-06-01
    await withEmulator({}, async (client, emulator) => {
      const sampled: Array<Request> = [
        { custom_id: "t1", params: { ...request(0).params, temperature: 0.2 } as MessageCreateParamsNonStreaming },
        { custom_id: "t2", params: { ...request(0).params, top_p: 0.9 } as MessageCreateParamsNonStreaming },
        { custom_id: "t3", params: { ...request(0).params, messages: [] } },
        { custom_id: "t4", params: { ...request(0).params, bogus: 1 } as MessageCreateParamsNonStreaming }
      ]
      const current = await poll(client, (await client.messages.batches.create({ requests: sampled })).id)
      assert.strictEqual(current.batch.request_counts.errored, 4)
      const messages = new Map((await collect(client, current.batch.id)).map((l) => [l.custom_id, (l.result as any).error.error]))
      assert.deepStrictEqual(messages.get("t1"), { type: "invalid_request_error", message: "temperature: Extra inputs are not permitted" })
      assert.deepStrictEqual(messages.get("t2"), { type: "invalid_request_error", message: "top_p: Extra inputs are not permitted" })
      assert.match(messages.get("t3").message, /^messages: /)
      assert.deepStrictEqual(messages.get("t4"), { type: "invalid_request_error", message: "bogus: Extra inputs are not permitted" })
      const legacy = sdk(emulator.url, { defaultHeaders: { "anthropic-version": "2023-06-01" } })
      const old = await poll(legacy, (await legacy.messages.batches.create({ requests: sampled.slice(0, 2) })).id)
      assert.strictEqual(old.batch.request_counts.succeeded, 2)
    })
  })

  it("lists batches newest first with limit, after_id and before_id (and the SDK's auto-pagination)", async () => {
    await withEmulator({}, async (client) => {
      const ids: Array<string> = []
      for (let i = 0; i < 7; i++) ids.push((await client.messages.batches.create({ requests: [request(i)] })).id)
      const newestFirst = [...ids].reverse()
      const page1 = await client.messages.batches.list({ limit: 3 })
      assert.deepStrictEqual(page1.data.map((b) => b.id), newestFirst.slice(0, 3))
      assert.isTrue(page1.has_more)
      assert.strictEqual(page1.first_id, newestFirst[0])
      assert.strictEqual(page1.last_id, newestFirst[2])
      const page2 = await client.messages.batches.list({ limit: 3, after_id: page1.last_id! })
      assert.deepStrictEqual(page2.data.map((b) => b.id), newestFirst.slice(3, 6))
      const page3 = await client.messages.batches.list({ limit: 3, after_id: page2.last_id! })
      assert.deepStrictEqual(page3.data.map((b) => b.id), newestFirst.slice(6))
      assert.isFalse(page3.has_more)
      // before_id pages back toward newer batches: the ones right before the cursor
      const back = await client.messages.batches.list({ limit: 2, before_id: newestFirst[4]! })
      assert.deepStrictEqual(back.data.map((b) => b.id), newestFirst.slice(2, 4))
      assert.isTrue(back.has_more)
      const back2 = await client.messages.batches.list({ limit: 2, before_id: back.first_id! })
      assert.deepStrictEqual(back2.data.map((b) => b.id), newestFirst.slice(0, 2))
      assert.isFalse(back2.has_more)
      const between = await client.messages.batches.list({ before_id: newestFirst[5]!, after_id: newestFirst[1]! })
      assert.deepStrictEqual(between.data.map((b) => b.id), newestFirst.slice(2, 5))
      const all: Array<string> = []
      for await (const b of client.messages.batches.list({ limit: 2 })) all.push(b.id)
      assert.deepStrictEqual(all, newestFirst)
      const newer: Array<string> = []
      for await (const b of client.messages.batches.list({ limit: 2, before_id: newestFirst[6]! })) newer.push(b.id)
      assert.sameMembers(newer, newestFirst.slice(0, 6))
      assert.strictEqual((await client.messages.batches.list()).data.length, 7)
      assert.instanceOf(await client.messages.batches.list({ limit: 1001 }).catch((e) => e), Anthropic.BadRequestError)
    })
  })

  it("cancels: in_progress → canceling → ended, done requests kept, the rest canceled; an ended batch cannot be canceled", async () => {
    const requests = Array.from({ length: 200 }, (_, i) => request(i))
    await withEmulator({ linesPerSecond: 50, cancellingMs: 80 }, async (client) => {
      const created = await client.messages.batches.create({ requests })
      await new Promise((r) => setTimeout(r, 150))
      const canceling = await client.messages.batches.cancel(created.id)
      assert.strictEqual(canceling.processing_status, "canceling")
      assert.match(canceling.cancel_initiated_at!, RFC3339)
      assert.deepStrictEqual(canceling.request_counts, { processing: 200, succeeded: 0, errored: 0, canceled: 0, expired: 0 })
      const twice = await client.messages.batches.cancel(created.id)
      assert.strictEqual(twice.cancel_initiated_at, canceling.cancel_initiated_at, "a second cancel changes nothing")
      const { batch, seen } = await poll(client, created.id)
      assert.strictEqual(seen.at(-1), "ended")
      assert.isTrue(seen.every((s) => s === "canceling" || s === "ended"), seen.join())
      const { canceled, succeeded } = batch.request_counts
      assert.isAbove(succeeded, 0)
      assert.isAbove(canceled, 0)
      assert.strictEqual(succeeded + canceled, 200)
      assert.isAtLeast(Date.parse(batch.ended_at!) - Date.parse(batch.cancel_initiated_at!), 80)
      const lines = await collect(client, batch.id)
      assert.strictEqual(lines.length, 200)
      assert.strictEqual(lines.filter((l) => l.result.type === "canceled").length, canceled)
      for (const l of lines.filter((l) => l.result.type === "canceled")) assert.deepStrictEqual(l.result, { type: "canceled" })
      const refused = await client.messages.batches.cancel(created.id).catch((e) => e)
      assert.instanceOf(refused, Anthropic.BadRequestError)
      assert.strictEqual(refused.type, "invalid_request_error")
    })
  })

  it("expires: a batch not done within its window ends with the rest expired", async () => {
    const requests = Array.from({ length: 100 }, (_, i) => request(i))
    await withEmulator({ linesPerSecond: 200, completionWindowMs: 200 }, async (client) => {
      const created = await client.messages.batches.create({ requests })
      assert.strictEqual(Date.parse(created.expires_at) - Date.parse(created.created_at), 200)
      const { batch } = await poll(client, created.id)
      assert.strictEqual(batch.ended_at, batch.expires_at)
      const { expired, succeeded } = batch.request_counts
      assert.isAbove(succeeded, 0)
      assert.isAbove(expired, 0)
      assert.strictEqual(succeeded + expired, 100)
      const lines = await collect(client, batch.id)
      assert.strictEqual(lines.filter((l) => l.result.type === "expired").length, expired)
      assert.strictEqual(lines.filter((l) => l.result.type === "succeeded").length, succeeded)
    })
  })

  it("deletes ended batches only; a deleted batch is gone from retrieve, results and list", async () => {
    await withEmulator({ linesPerSecond: 25 }, async (client) => {
      const slow = await client.messages.batches.create({ requests: Array.from({ length: 50 }, (_, i) => request(i)) })
      const early = await client.messages.batches.delete(slow.id).catch((e) => e)
      assert.instanceOf(early, Anthropic.BadRequestError)
      assert.match(early.message, /cannot be deleted while it is being processed/)
      const { batch } = await poll(client, slow.id)
      const other = await client.messages.batches.create({ requests: [request(1)] })
      const deleted = await client.messages.batches.delete(batch.id)
      assert.deepStrictEqual(deleted, { id: batch.id, type: "message_batch_deleted" })
      assert.instanceOf(await client.messages.batches.retrieve(batch.id).catch((e) => e), Anthropic.NotFoundError)
      assert.instanceOf(await client.messages.batches.delete(batch.id).catch((e) => e), Anthropic.NotFoundError)
      const stale = await fetch(batch.results_url!, { headers: { "x-api-key": "k", "anthropic-version": "2023-06-01" } })
      assert.strictEqual(stale.status, 404)
      assert.deepStrictEqual((await client.messages.batches.list()).data.map((b) => b.id), [other.id])
    })
  })

  it("checks the create body: 413 request_too_large past the size limit, 400 for bad custom_id, duplicates, missing params, too many requests", async () => {
    await withEmulator({ maxBodyBytes: 20_000, maxRequestsPerBatch: 5 }, async (client) => {
      const big = Array.from({ length: 4 }, (_, i) => ({
        custom_id: `big-${i}`,
        params: { model: "claude-sonnet-4-6", max_tokens: 10, messages: [{ role: "user" as const, content: "x".repeat(8_000) }] }
      }))
      const tooLarge = await client.messages.batches.create({ requests: big }).catch((e) => e)
      assert.instanceOf(tooLarge, Anthropic.ContentTooLargeError)
      assert.strictEqual(tooLarge.status, 413)
      assert.strictEqual(tooLarge.type, "request_too_large")
      assert.strictEqual((tooLarge.error as { type: string }).type, "error")
      const create = async (requests: Array<unknown>) => {
        const e = await client.messages.batches.create({ requests } as any).catch((e) => e)
        assert.instanceOf(e, Anthropic.BadRequestError)
        assert.strictEqual(e.type, "invalid_request_error")
        return e.apiMessage as string
      }
      const ok = request(0)
      assert.match(await create([ok, { ...ok, custom_id: "has space" }]), /^requests\.1\.custom_id: String should match pattern/)
      assert.match(await create([{ ...ok, custom_id: "x".repeat(65) }]), /^requests\.0\.custom_id: String should match/)
      assert.match(await create([ok, ok]), /^requests\.1\.custom_id: .*unique/)
      assert.match(await create([{ custom_id: "a", params: { model: "m", messages: [] } }]), /^requests\.0\.params\.max_tokens: Field required/)
      assert.match(await create([{ custom_id: "a", params: { max_tokens: 5, messages: [] } }]), /^requests\.0\.params\.model: Field required/)
      assert.match(await create([{ custom_id: "a", params: { model: "m", max_tokens: 5 } }]), /^requests\.0\.params\.messages: Field required/)
      assert.match(await create([{ custom_id: "a" }]), /^requests\.0\.params: Field required/)
      assert.match(await create([]), /^requests: List should have at least 1 item/)
      assert.match(await create(Array.from({ length: 6 }, (_, i) => request(i))), /^requests: List should have at most 5 items/)
      // a body that is not JSON at all, over plain HTTP
      const url = `${client.baseURL}/v1/messages/batches`
      const raw = await fetch(url, { method: "POST", headers: { "x-api-key": "k", "anthropic-version": "2023-06-01" }, body: `{"requests":[{]` })
      assert.strictEqual(raw.status, 400)
      assert.strictEqual(((await raw.json()) as any).error.type, "invalid_request_error")
      // a pretty-printed body with the requests in it is read like a compact one
      const pretty = await fetch(url, {
        method: "POST",
        headers: { "x-api-key": "k", "anthropic-version": "2023-06-01", "content-type": "application/json" },
        body: JSON.stringify({ requests: [ok, request(1)] }, null, 2)
      })
      assert.strictEqual(pretty.status, 200)
      assert.deepStrictEqual(((await pretty.json()) as MessageBatch).request_counts.processing, 2)
      assert.strictEqual((await client.messages.batches.list()).data.length, 1)
    })
  })

  it("needs an API key (401) and an anthropic-version (400), in Anthropic's error shape; x-api-key or Bearer both work", async () => {
    await withEmulator({}, async (client, emulator) => {
      const anonymous = new Anthropic({ apiKey: "unused", baseURL: emulator.url, maxRetries: 0, defaultHeaders: { Authorization: null } })
      const unauthorized = await anonymous.messages.batches.list().catch((e) => e)
      assert.instanceOf(unauthorized, Anthropic.AuthenticationError)
      assert.strictEqual(unauthorized.type, "authentication_error")
      const raw = await fetch(`${emulator.url}/v1/messages/batches`, { headers: { "anthropic-version": "2023-06-01" } })
      assert.strictEqual(raw.status, 401)
      const body = (await raw.json()) as any
      assert.deepStrictEqual(Object.keys(body).sort(), ["error", "request_id", "type"])
      assert.strictEqual(body.type, "error")
      assert.deepStrictEqual(body.error, { type: "authentication_error", message: "x-api-key header is required" })
      assert.strictEqual(raw.headers.get("request-id"), body.request_id)
      const noVersion = await fetch(`${emulator.url}/v1/messages/batches`, { headers: { "x-api-key": "k" } })
      assert.strictEqual(noVersion.status, 400)
      assert.deepStrictEqual(((await noVersion.json()) as any).error, {
        type: "invalid_request_error",
        message: "anthropic-version: header is required"
      })
      const withKey = await fetch(`${emulator.url}/v1/messages/batches`, { headers: { "x-api-key": "k", "anthropic-version": "2023-06-01" } })
      assert.strictEqual(withKey.status, 200)
      const missing = await client.messages.batches.retrieve("msgbatch_nope").catch((e) => e)
      assert.instanceOf(missing, Anthropic.NotFoundError)
      assert.strictEqual(missing.type, "not_found_error")
      assert.instanceOf(await client.messages.batches.cancel("msgbatch_nope").catch((e) => e), Anthropic.NotFoundError)
      assert.strictEqual((await fetch(`${emulator.url}/v1/nope`, { headers: { "x-api-key": "k" } })).status, 404)
    })
  })

  it("answers 404 on retrieve and results right after create (notFoundAfterCreateMs), then the batch appears", async () => {
    await withEmulator({ notFoundAfterCreateMs: 1_500 }, async (client) => {
      const created = await client.messages.batches.create({ requests: [request(0), request(1)] })
      const early = await client.messages.batches.retrieve(created.id).catch((e) => e)
      assert.instanceOf(early, Anthropic.NotFoundError)
      assert.deepStrictEqual((await client.messages.batches.list()).data.map((b) => b.id), [created.id], "list already shows it")
      await new Promise((r) => setTimeout(r, 1_550))
      const { batch } = await poll(client, created.id)
      assert.strictEqual((await collect(client, batch.id)).length, 2)
    })
  })

  it("answers creates late (createLatencyMs) while the batch already exists; lists new batches late (listLagMs)", async () => {
    await withEmulator({ createLatencyMs: 800, linesPerSecond: 1_000 }, async (client, emulator) => {
      const started = Date.now()
      const pending = client.messages.batches.create({ requests: [request(0), request(1)] })
      await new Promise((r) => setTimeout(r, 300))
      // before the answer: listed, retrievable, counted as unanswered and in flight
      const listed = (await client.messages.batches.list()).data
      assert.strictEqual(listed.length, 1)
      assert.strictEqual((await client.messages.batches.retrieve(listed[0]!.id)).id, listed[0]!.id)
      const during = await Effect.runPromise(emulator.counters())
      assert.deepStrictEqual(during.creates, { received: 1, answered: 0, inFlight: 1 })
      assert.strictEqual(during.unanswered, 1)
      const created = await pending
      assert.isAtLeast(Date.now() - started, 750)
      assert.strictEqual(created.id, listed[0]!.id)
      const after = await Effect.runPromise(emulator.counters())
      assert.deepStrictEqual(after.creates, { received: 1, answered: 1, inFlight: 0 })
      assert.strictEqual(after.unanswered, 0)
      assert.isAtLeast(after.batches[0]!.answered_ms! - after.batches[0]!.created_ms, 750)
    })
    await withEmulator({ listLagMs: 500 }, async (client) => {
      const created = await client.messages.batches.create({ requests: [request(0)] })
      assert.strictEqual((await client.messages.batches.list()).data.length, 0, "not listed yet")
      assert.strictEqual((await client.messages.batches.retrieve(created.id)).id, created.id, "but retrievable")
      await new Promise((r) => setTimeout(r, 550))
      assert.deepStrictEqual((await client.messages.batches.list()).data.map((b) => b.id), [created.id])
    })
  })

  it("a create fault of phase after creates the batch, then answers the error", async () => {
    await withEmulator({ endpointFaults: [{ endpoint: "create", status: 500, times: 1, phase: "after", retryAfterMs: 10 }] }, async (client) => {
      const failed = await client.messages.batches.create({ requests: [request(0), request(1)] }).catch((e) => e)
      assert.instanceOf(failed, Anthropic.InternalServerError)
      const listed = (await client.messages.batches.list()).data
      assert.strictEqual(listed.length, 1, "the batch exists although the call failed")
      assert.strictEqual(listed[0]!.request_counts.processing, 2)
      // the fault fired once
      assert.match((await client.messages.batches.create({ requests: [request(2)] })).id, /^msgbatch_/)
    })
  })

  it("counts what a test needs: results downloads per batch, requests sent again with or without a failure before; served over HTTP", async () => {
    await withEmulator({ linesPerSecond: 5, cancellingMs: 10 }, async (client, emulator) => {
      const a = await client.messages.batches.create({ requests: [request(0), request(1)] })
      // request 0 again while a still runs (and will succeed): sent twice without a failure before
      const b = await client.messages.batches.create({ requests: [request(0)] })
      // 2 and 3 cancelled before they were processed, then sent again: retries
      const c = await client.messages.batches.create({ requests: [request(2), request(3)] })
      await client.messages.batches.cancel(c.id)
      await poll(client, c.id)
      const d = await client.messages.batches.create({ requests: [request(2), request(3)] })
      for (const id of [a.id, b.id, d.id]) await poll(client, id)
      await collect(client, a.id)
      await collect(client, a.id)
      const counters = await Effect.runPromise(emulator.counters({ ids: true }))
      const byId = new Map(counters.batches.map((x) => [x.id, x]))
      assert.strictEqual(byId.get(a.id)!.results_downloads, 2)
      assert.strictEqual(byId.get(b.id)!.results_downloads, 0)
      assert.deepStrictEqual(byId.get(b.id)!.custom_ids, [request(0).custom_id])
      assert.isNumber(byId.get(c.id)!.cancel_ms)
      assert.deepStrictEqual(counters.requests, { sent: 7, distinct: 4, sentTwiceWithoutFailure: 1, retried: 2 })
      assert.strictEqual(counters.repeatedSets, 1, "d repeats c's set")
      const http = await (await fetch(`${emulator.url}${Emulator.COUNTERS_PATH}`)).json() as Emulator.Counters
      assert.deepStrictEqual(http.requests, counters.requests)
      assert.isUndefined(http.batches[0]!.custom_ids)
    })
  })

  it("injects endpoint faults with retry-after: the SDK backs off and retries; without retries the error surfaces", async () => {
    await withEmulator(
      { endpointFaults: [{ endpoint: "create", status: 529, times: 1, retryAfterMs: 50 }, { endpoint: "retrieve", status: 429, times: 2, retryAfterMs: 100 }] },
      async (client, emulator) => {
        const failed = await client.messages.batches.create({ requests: [request(0)] }).catch((e) => e)
        assert.instanceOf(failed, Anthropic.OverloadedError)
        assert.strictEqual(failed.status, 529)
        assert.strictEqual((await client.messages.batches.list()).data.length, 0, "a refused create created nothing")
        const created = await client.messages.batches.create({ requests: [request(0)] })
        const limited = await client.messages.batches.retrieve(created.id).catch((e) => e)
        assert.instanceOf(limited, Anthropic.RateLimitError)
        assert.strictEqual(limited.headers.get("retry-after"), "1")
        assert.strictEqual(limited.headers.get("retry-after-ms"), "100")
        const patient = sdk(emulator.url, { maxRetries: 2 })
        const start = Date.now()
        assert.strictEqual((await patient.messages.batches.retrieve(created.id)).id, created.id)
        assert.isAtLeast(Date.now() - start, 90, "the SDK waited retry-after-ms")
      }
    )
  })

  it("carries on after a restart on the same dir mid-batch: same results, results_url on the new port", async () => {
    const dir = tmp("restart")
    const requests = Array.from({ length: 150 }, (_, i) => request(i))
    const knobs = { dir, linesPerSecond: 100 }
    const started = await withEmulator(knobs, async (client, emulator) => {
      const created = await client.messages.batches.create({ requests })
      assert.strictEqual((await client.messages.batches.retrieve(created.id)).processing_status, "in_progress")
      assert.deepStrictEqual(await Effect.runPromise(emulator.stats), { batchesCreated: 1, linesProcessed: 0 })
      return created.id
    })
    const first = await withEmulator(knobs, async (client, emulator) => {
      const { batch } = await poll(client, started)
      assert.strictEqual(batch.results_url, `${emulator.url}/v1/messages/batches/${started}/results`)
      assert.strictEqual(batch.request_counts.succeeded, 150)
      const lines = await collect(client, started)
      const byId = new Map(requests.map((r) => [r.custom_id, r]))
      for (const line of lines) checkMessage(byId.get(line.custom_id)!.params, (line.result as any).message, "batch")
      assert.deepStrictEqual(await Effect.runPromise(emulator.stats), { batchesCreated: 1, linesProcessed: 150 })
      return JSON.stringify(lines)
    })
    await withEmulator(knobs, async (client) => {
      assert.strictEqual(JSON.stringify(await collect(client, started)), first, "byte for byte")
      assert.strictEqual((await client.messages.batches.list()).data.length, 1)
    })
    fs.rmSync(dir, { recursive: true, force: true })
  })

  it("survives SIGKILL of the process serving it: a new serve on the same dir ends the batch, deterministically", async () => {
    const dir = tmp("sigkill")
    const requests = Array.from({ length: 300 }, (_, i) => request(i))
    const knobs = { dir, linesPerSecond: 200 }
    const script = [
      `import * as Emulator from ${JSON.stringify(path.resolve(import.meta.dirname, "../emulator/Emulator.ts"))}`,
      `import { Effect } from "effect"`,
      `Effect.runFork(Effect.scoped(Effect.flatMap(Emulator.serve(${JSON.stringify(knobs)}),`,
      `  (e) => Effect.andThen(Effect.sync(() => console.log(e.url)), Effect.never))))`
    ].join("\n")
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
      cwd: path.resolve(import.meta.dirname, "../../../.."),
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stderr = ""
    child.stderr.on("data", (d) => (stderr += d))
    const url = await new Promise<string>((resolve, reject) => {
      let out = ""
      child.stdout.on("data", (d) => {
        out += d
        const m = /http:\/\/\S+/.exec(out)
        if (m) resolve(m[0])
      })
      child.on("exit", () => reject(new Error(`emulator process exited: ${stderr}`)))
    })
    const client = sdk(url)
    const created = await client.messages.batches.create({ requests })
    await new Promise((r) => setTimeout(r, 100))
    assert.strictEqual((await client.messages.batches.retrieve(created.id)).processing_status, "in_progress")
    child.kill("SIGKILL")
    await new Promise((r) => child.once("exit", r))
    const copy = tmp("sigkill-copy")
    fs.cpSync(dir, copy, { recursive: true })
    const resultsOf = (folder: string) =>
      withEmulator({ ...knobs, dir: folder }, async (client) => {
        const { batch } = await poll(client, created.id)
        assert.strictEqual(batch.request_counts.succeeded, 300)
        return JSON.stringify(await collect(client, created.id))
      })
    const text = await resultsOf(dir)
    const byId = new Map(requests.map((r) => [r.custom_id, r]))
    for (const line of JSON.parse(text) as Array<MessageBatchIndividualResponse>) {
      checkMessage(byId.get(line.custom_id)!.params, (line.result as any).message, "batch")
    }
    assert.strictEqual(await resultsOf(copy), text)
  })

  it("serves the synchronous Messages API with the same engine (text, forced tool, stop sequences, cache, 400s)", async () => {
    await withEmulator({}, async (client) => {
      for (let i = 0; i < 5; i++) {
        const params = request(i).params
        checkMessage(params, await client.messages.create(params), "standard")
      }
      // the cached prefix of request 4 was written by the call above: now it is read
      const again = await client.messages.create(request(9).params)
      assert.isAbove(again.usage.cache_read_input_tokens ?? 0, 0)
      assert.strictEqual(again.usage.cache_creation_input_tokens, 0)
      const bad = await client.messages.create({ model: "m", max_tokens: 5, messages: [] }).catch((e) => e)
      assert.instanceOf(bad, Anthropic.BadRequestError)
      const sampled = await client.messages.create({ ...request(0).params, temperature: 0.5 } as any).catch((e) => e)
      assert.instanceOf(sampled, Anthropic.BadRequestError)
      assert.strictEqual(sampled.apiMessage, "temperature: Extra inputs are not permitted")
      const unknownTool = await client.messages.create({ ...request(0).params, tools: [{ name: "a", input_schema: { type: "object" } }], tool_choice: { type: "tool", name: "b" } })
        .catch((e) => e)
      assert.instanceOf(unknownTool, Anthropic.BadRequestError)
    })
  })
})

describe("Emulator internals", () => {
  it("archives a batch 29 days after creation: archived_at set, results no longer served", () => {
    const created = Date.parse("2026-11-01T00:00:00Z")
    const rec: Store.BatchRecord = {
      id: "msgbatch_01x",
      seq: 1,
      created_ms: created,
      knobs: { seed: 0, linesPerSecond: 10, cancellingMs: 0, completionWindowMs: 86_400_000, lineFailures: [], shuffle: true, notFoundAfterCreateMs: 0 },
      version: "2026-10-21",
      total: 2,
      cancel_ms: null,
      final: { ended_ms: created + 200, counts: { processing: 0, succeeded: 2, errored: 0, canceled: 0, expired: 0 } },
      deleted_ms: null
    }
    const day = 86_400_000
    assert.isNull(Batch.view(rec, created + 28 * day, "http://h").archived_at)
    assert.strictEqual(Batch.view(rec, created + 30 * day, "http://h").archived_at, "2026-11-30T00:00:00.000Z")
    assert.strictEqual(Batch.view(rec, created + 30 * day, "http://h").results_url, "http://h/v1/messages/batches/msgbatch_01x/results")
    // a batch without results: in progress until every request is done, then it needs its results written
    const open = { ...rec, final: null }
    assert.deepStrictEqual(Batch.derive(open, created + 100), { status: "in_progress", need: null })
    assert.deepStrictEqual(Batch.derive(open, created + 200), { status: "in_progress", need: { reason: "completed", processed: 2, at: created + 200 } })
    assert.deepStrictEqual(Batch.derive({ ...open, cancel_ms: created + 150 }, created + 150), {
      status: "canceling",
      need: { reason: "canceled", processed: 1, at: created + 150 }
    })
  })
})

describe("Emulator create-body scanner", () => {
  const scan = (body: string, cuts: ReadonlyArray<number>) => {
    const bytes = Buffer.from(body)
    const elements: Array<unknown> = []
    const scanner = new Create.Scanner((element) => {
      elements.push(JSON.parse(element.toString("utf8")))
      return undefined
    })
    let at = 0
    for (const cut of [...cuts, bytes.length]) {
      scanner.push(bytes.subarray(at, cut))
      at = cut
    }
    return { elements, outcome: scanner.end() }
  }

  it("finds every element of `requests` whatever the chunk boundaries (strings with quotes, escapes, brackets, unicode)", () => {
    const random = (() => {
      let x = 12345
      return () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 4294967296
    })()
    const tricky = ["plain", `a "quoted" {brace} [bracket], comma`, "back\\slash\\", "ünïcødé ✓ 🙂", "\n\t\u0041 \\\""]
    for (let round = 0; round < 40; round++) {
      const requests = Array.from({ length: 1 + Math.floor(random() * 12) }, (_, i) => ({
        custom_id: `r${round}-${i}`,
        params: { model: "m", max_tokens: 5, messages: [{ role: "user", content: tricky[i % tricky.length]! }], n: [1, [2, { x: null }]] }
      }))
      const body = round % 2 === 0 ? JSON.stringify({ requests }) : JSON.stringify({ requests }, null, round % 4 === 1 ? 2 : "\t")
      const length = Buffer.byteLength(body)
      // one byte at a time in the first rounds, random cuts after
      const cuts = round < 3
        ? Array.from({ length: length - 1 }, (_, i) => i + 1)
        : Array.from({ length: Math.floor(random() * 8) }, () => Math.floor(random() * length)).sort((a, b) => a - b)
      const { elements, outcome } = scan(body, cuts)
      assert.isUndefined(outcome.error, body)
      assert.strictEqual(outcome.count, requests.length)
      assert.deepStrictEqual(elements, requests)
    }
    // scalar elements are elements too (and then refused by the request check)
    assert.deepStrictEqual(scan(`{"requests":[1, "two" ,{"a":[]}]}`, [3, 15, 16]).elements, [1, "two", { a: [] }])
  })

  it("refuses what is not a requests body", () => {
    for (const [body, message] of [
      [`{"requests":[{"a":1}]`, /not valid JSON/],
      [`{"requests":[{"a":1}]}}`, /not valid JSON/],
      [`[1,2]`, /not valid JSON/],
      [`{}`, /^requests: Field required/],
      [`{"requests":[]}`, /^requests: List should have at least 1 item/],
      [`{"requests":{}}`, /^requests: Input should be a valid list/],
      [`{"requests":[{}],"model":"x"}`, /^model: Extra inputs are not permitted/]
    ] as const) {
      assert.match(scan(body, []).outcome.error ?? "", message, body)
    }
  })
})

describe("Emulator.serve", () => {
  it.live("reports batches created and lines processed", () =>
    Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ lineFailures: [{ type: "api_error", rate: 0.5 }] })
      assert.deepStrictEqual(yield* emulator.stats, { batchesCreated: 0, linesProcessed: 0 })
      const client = sdk(emulator.url)
      const id = yield* Effect.promise(async () => (await client.messages.batches.create({ requests: [request(0), request(1), request(2)] })).id)
      yield* Effect.promise(() => poll(client, id))
      assert.deepStrictEqual(yield* emulator.stats, { batchesCreated: 1, linesProcessed: 3 })
      assert.isTrue(fs.existsSync(emulator.dir))
    }).pipe(Effect.scoped))

  it.live("removes its temp folder when the scope closes, keeps a given one", () =>
    Effect.gen(function*() {
      const temp = yield* Effect.scoped(Effect.map(Emulator.serve(), (e) => e.dir))
      assert.isFalse(fs.existsSync(temp))
      const dir = tmp("kept")
      yield* Effect.scoped(Emulator.serve({ dir }))
      assert.isTrue(fs.existsSync(path.join(dir, "batches")))
    }))

  it.live("fails with EmulatorError when the port is taken", () =>
    Effect.gen(function*() {
      const first = yield* Emulator.serve()
      const port = Number(new URL(first.url).port)
      const error = yield* Effect.flip(Emulator.serve({ port }))
      assert.strictEqual(error._tag, "EmulatorError")
    }).pipe(Effect.scoped))
})
