/**
 * Fingerprints are the result cache's keys across runs and versions: the same request must give the same 64 hex
 * characters after any change to how they are computed. The values below were made by the first implementation
 * (a hash object fed piece by piece); `canonicalJson` is checked against a plain sort-and-recurse reference.
 */
import * as Fingerprint from "@offpeak/core/Fingerprint"
import * as Request from "@offpeak/core/Request"
import { Schema } from "effect"
import { describe, expect, it } from "vitest"

const Label = Schema.Struct({ category: Schema.Literals(["bug", "other"]), urgent: Schema.Boolean })

const chat = (output?: { readonly name: string; readonly schema: Schema.Top }) =>
  Request.chat({ model: "gpt-4o-mini", system: "Label the ticket.", prompt: "the app crashes", maxTokens: 400, temperature: 0, output } as any)

/** the canonical JSON as written down: keys sorted, undefined members dropped, toJSON honoured */
const reference = (value: unknown): string | undefined => {
  if (value === null || typeof value !== "object") return JSON.stringify(value)
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") return reference((value as { toJSON: () => unknown }).toJSON())
  if (Array.isArray(value)) return `[${value.map((v) => reference(v) ?? "null").join(",")}]`
  const members = Object.keys(value).sort().flatMap((k) => {
    const text = reference((value as Record<string, unknown>)[k])
    return text === undefined ? [] : [`${JSON.stringify(k)}:${text}`]
  })
  return `{${members.join(",")}}`
}

/** a deterministic generator of nested values with unsorted and numeric keys, undefined, dates, unicode */
const values = (seed: number) => {
  let s = seed
  const rand = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff)
  const keys = ["b", "a", "10", "9", "content", "role", "é", "😀", "", "a\"b", "\u2028"]
  const make = (depth: number): unknown => {
    const r = rand()
    if (depth > 3 || r < 0.3) {
      const leaves = [null, undefined, 0, -1.5, 1e21, NaN, true, false, "", "x", "héllo \u2028 \"q\" 😀", new Date(Math.floor(rand() * 1e12))]
      return leaves[Math.floor(rand() * leaves.length)]
    }
    if (r < 0.55) return Array.from({ length: Math.floor(rand() * 4) }, () => make(depth + 1))
    const o: Record<string, unknown> = {}
    for (let i = Math.floor(rand() * 5); i > 0; i--) o[keys[Math.floor(rand() * keys.length)]!] = make(depth + 1)
    return o
  }
  return Array.from({ length: 500 }, () => make(0))
}

describe("Fingerprint", () => {
  it("gives the same fingerprints as the first implementation (the result cache's keys across versions)", () => {
    expect(Fingerprint.of(chat({ name: "label", schema: Label }))).toBe("42d6e4ede8f55c2d74fe9c63c186406ca995dcd7d299320339ae9f50aaf3a4b2")
    // the output's name is part of it, and the schema object is cached per name
    expect(Fingerprint.of(chat({ name: "tag", schema: Label }))).toBe("2ed68f0543a30f92546d1ee15975038780124aab17b6ef7f41b85a1772008ad9")
    expect(Fingerprint.of(chat({ name: "label", schema: Label }))).toBe("42d6e4ede8f55c2d74fe9c63c186406ca995dcd7d299320339ae9f50aaf3a4b2")
    expect(Fingerprint.of(Request.chat({ model: "gpt-4o-mini", prompt: "héllo \u2028 😀" } as any))).toBe(
      "d54dcea220777cdfcc9d6e7543c46b7ed4787a55baa8e96ae8ab924801d31097"
    )
    expect(Fingerprint.of(Request.embedding({ model: "text-embedding-3-small", input: "hello" }))).toBe(
      "285bfb2ab5e17ab896965a60b57eeb292f889e9c63c41810e2cf17aae019e174"
    )
    expect(Fingerprint.of(Request.embedding({ model: "text-embedding-3-small", input: "hello", dimensions: 256 }))).toBe(
      "52941a27dcb3bb62b3152009b59cee237c491cd7402816f347a33ba04d4e0ad9"
    )
  })

  it("canonicalJson is the sorted-keys JSON of any value: 2,000 generated values agree with the reference", () => {
    let checked = 0
    for (const seed of [1, 2, 3, 4]) {
      for (const value of values(seed)) {
        expect(Fingerprint.canonicalJson(value)).toBe(reference(value) ?? "null")
        checked++
      }
    }
    // key order and undefined members do not change the text
    expect(Fingerprint.canonicalJson({ b: 1, a: [undefined, { d: undefined, c: 2 }] })).toBe(`{"a":[null,{"c":2}],"b":1}`)
    expect(Fingerprint.canonicalJson({ "10": 1, "9": 2 })).toBe(`{"10":1,"9":2}`)
    expect(checked).toBe(2_000)
  })
})
