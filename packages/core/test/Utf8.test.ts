import { describe, expect, it } from "vitest"
import * as Utf8 from "../src/internal/utf8.ts"

describe("Utf8.encode", () => {
  const texts = ["", "plain ascii", "é, ü, ß — “quotes”", "日本語のテキスト", "emoji 🎉👩‍👩‍👧", "lone \uD800 surrogate", "\uDFFF", "x".repeat(70_000)]

  it("is what encoding the joined text gives, byte for byte, with and without newlines", () => {
    expect(Utf8.encode(texts.length, (i) => texts[i]!, true).equals(Buffer.from(texts.map((t) => `${t}\n`).join(""), "utf8")))
      .toBe(true)
    expect(Utf8.encode(texts.length, (i) => texts[i]!, false).equals(Buffer.from(texts.join(""), "utf8"))).toBe(true)
    expect(Utf8.encode(0, () => "never", true).length).toBe(0)
  })

  it("a rope built with += encodes the same as its flat copy", () => {
    let rope = ""
    for (let i = 0; i < 2_000; i++) rope += `line ${i} ✓ ` + "\n"
    expect(Utf8.encode(1, () => rope, false).toString("utf8")).toBe(rope)
  })
})
