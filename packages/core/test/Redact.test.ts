import { assert, describe, it } from "@effect/vitest"
import { Redacted } from "effect"
import * as Redact from "../src/Redact.ts"

describe("Redact", () => {
  it("masks the password of URLs and secret query values, wherever they are in a message", () => {
    assert.strictEqual(Redact.url("http://me:sk-123@localhost:8080/v1"), "http://me:***@localhost:8080/v1")
    assert.strictEqual(Redact.url("postgres://app:p%40ss@db:5432/x"), "postgres://app:***@db:5432/x")
    assert.strictEqual(Redact.url("https://token123@host/v1"), "https://***@host/v1")
    assert.strictEqual(
      Redact.url("GET https://h/v1/models?key=AIzaSy-abc&alt=media&api_key=zzz failed"),
      "GET https://h/v1/models?key=***&alt=media&api_key=*** failed"
    )
    assert.strictEqual(Redact.url("no url here: user@example.com"), "no url here: user@example.com")
  })

  it("masks registered secrets in any text, Redacted or plain; short values are not searched for", () => {
    Redact.register(Redacted.make("sk-proj-abcdef123456"))
    Redact.register("xyz")
    const echoed = `401 Incorrect API key provided: sk-proj-abcdef123456. You can find your key at …; xyz`
    assert.strictEqual(Redact.text(echoed), "401 Incorrect API key provided: ***. You can find your key at …; xyz")
    Redact.registerUrl("postgres://app:hunter22secret@db/x")
    assert.strictEqual(Redact.text("auth failed for hunter22secret"), "auth failed for ***")
  })
})
