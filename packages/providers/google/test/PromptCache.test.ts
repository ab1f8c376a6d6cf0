import { GoogleGenAI } from "@google/genai"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as GeminiEmulator from "../GeminiEmulator.ts"

const SYSTEM = "You label support tickets. Read each ticket and answer with the label that fits best. ".repeat(70)

describe("the Gemini emulator's implicit cache", () => {
  it("sync: the second request with the same long system instruction reports cachedContentTokenCount", () =>
    Effect.runPromise(Effect.scoped(Effect.flatMap(GeminiEmulator.serve({}), (emulator) =>
      Effect.promise(async () => {
        const ai = new GoogleGenAI({ apiKey: "test", vertexai: false, httpOptions: { baseUrl: emulator.url, apiVersion: "v1beta" } })
        const ask = (t: string) => ai.models.generateContent({ model: "gemini-2.5-flash", contents: t, config: { systemInstruction: SYSTEM } })
        const a = await ask("ticket one")
        const b = await ask("ticket two")
        assert.isUndefined(a.usageMetadata?.cachedContentTokenCount)
        assert.isAbove(b.usageMetadata?.cachedContentTokenCount ?? 0, 1024)
        console.log(`gemini sync: prompt ${b.usageMetadata?.promptTokenCount}, cached ${b.usageMetadata?.cachedContentTokenCount}`)
      })))))
})
