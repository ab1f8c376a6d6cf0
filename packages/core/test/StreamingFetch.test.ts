import { assert, describe, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as path from "node:path"
import * as zlib from "node:zlib"
import * as StreamingFetch from "../src/StreamingFetch.ts"

const MB = 1 << 20

/** a server that takes a request body slowly (a pause after every chunk) and answers with what it received */
const slowServer = (onChunk: (received: number) => void) =>
  new Promise<{ readonly url: string; readonly close: () => Promise<void> }>((resolve) => {
    const server = http.createServer((req, res) => {
      if (req.url === "/gzip") {
        res.writeHead(201, { "content-type": "application/json", "content-encoding": "gzip", "x-seen": "1" })
        res.end(zlib.gzipSync(JSON.stringify({ zipped: true })))
        req.resume()
        return
      }
      if (req.url === "/refuse") {
        res.writeHead(413, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: "too large" }))
        req.destroy()
        return
      }
      let received = 0
      req.on("data", (chunk: Buffer) => {
        received += chunk.length
        onChunk(received)
        req.pause()
        setTimeout(() => req.resume(), 2)
      })
      req.on("end", () => {
        res.writeHead(200, { "content-type": "application/json", "set-cookie": ["a=1", "b=2"] })
        res.end(JSON.stringify({ received, method: req.method, type: req.headers["content-type"] }))
      })
    })
    server.listen(0, "127.0.0.1", () =>
      resolve({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        close: () => new Promise((done) => server.close(() => done()))
      }))
  })

/** `total` bytes in 256 KiB chunks, noting how far ahead of the server's reading the producer ever got */
const producer = (total: number, received: () => number) => {
  const state = { produced: 0, ahead: 0 }
  async function* body() {
    const chunk = new Uint8Array(256 * 1024).fill(97)
    while (state.produced < total) {
      state.produced += chunk.length
      state.ahead = Math.max(state.ahead, state.produced - received())
      yield chunk
    }
  }
  return { body, state }
}

describe("StreamingFetch", () => {
  it("uploads a streamed body, read no further ahead of the server than a few MB", async () => {
    let received = 0
    const server = await slowServer((n) => (received = n))
    try {
      const total = 48 * MB
      const { body, state } = producer(total, () => received)
      const res = await StreamingFetch.fetch(`${server.url}/upload`, {
        method: "POST",
        body: ReadableStream.from(body()),
        headers: { "content-type": "application/jsonl" },
        duplex: "half"
      } as RequestInit)
      assert.strictEqual(res.status, 200)
      const answer = await res.json() as { received: number; method: string; type: string }
      assert.deepStrictEqual(answer, { received: total, method: "POST", type: "application/jsonl" })
      assert.strictEqual(res.headers.get("set-cookie"), "a=1, b=2")
      assert.isBelow(state.ahead, 8 * MB, `the upload read ${(state.ahead / MB).toFixed(1)} MB ahead of the server`)
    } finally {
      await server.close()
    }
  }, 60_000)

  it("an upload keeps a few MB alive, whatever its size (the global fetch keeps all of it until it ends)", async () => {
    const server = await slowServer(() => {})
    try {
      const measure = (which: "streaming" | "global") =>
        new Promise<{ peakMB: number; answer: { received: number } }>((resolve, reject) =>
          execFile(
            process.execPath,
            ["--expose-gc", path.join(import.meta.dirname, "support", "uploadMemory.ts"), `${server.url}/upload`, which, "64"],
            (error, stdout) => error !== null ? reject(error) : resolve(JSON.parse(stdout))
          )
        )
      const streaming = await measure("streaming")
      const global = await measure("global")
      console.log(
        `64 MB uploaded to a slow server: StreamingFetch kept at most ${streaming.peakMB.toFixed(1)} MB of buffers alive, ` +
          `the global fetch ${global.peakMB.toFixed(1)} MB`
      )
      assert.strictEqual(streaming.answer.received, 64 * MB)
      assert.strictEqual(global.answer.received, 64 * MB)
      assert.isBelow(streaming.peakMB, 16)
    } finally {
      await server.close()
    }
  }, 120_000)

  it("takes an async iterable body, decodes a gzip answer, passes a refusal through", async () => {
    const server = await slowServer(() => {})
    try {
      async function* small() {
        yield new TextEncoder().encode("hello")
      }
      const zipped = await StreamingFetch.fetch(`${server.url}/gzip`, { method: "POST", body: small() as unknown as NonNullable<RequestInit["body"]> })
      assert.strictEqual(zipped.status, 201)
      assert.strictEqual(zipped.headers.get("x-seen"), "1")
      assert.deepStrictEqual(await zipped.json(), { zipped: true })

      const { body } = producer(16 * MB, () => 0)
      const refused = await StreamingFetch.fetch(`${server.url}/refuse`, { method: "POST", body: body() as unknown as NonNullable<RequestInit["body"]> })
      assert.strictEqual(refused.status, 413)
      assert.deepStrictEqual(await refused.json(), { error: "too large" })
    } finally {
      await server.close()
    }
  })

  it("an abort stops the upload and rejects with the signal's reason", async () => {
    let received = 0
    const server = await slowServer((n) => (received = n))
    try {
      const controller = new AbortController()
      const { body, state } = producer(512 * MB, () => received)
      setTimeout(() => controller.abort(), 300)
      const error = await StreamingFetch.fetch(`${server.url}/upload`, {
        method: "POST",
        body: body() as unknown as NonNullable<RequestInit["body"]>,
        signal: controller.signal
      }).then(() => undefined, (e: unknown) => e)
      assert.instanceOf(error, DOMException)
      assert.strictEqual((error as DOMException).name, "AbortError")
      const at = state.produced
      await new Promise((r) => setTimeout(r, 200))
      assert.strictEqual(state.produced, at, "nothing read after the abort")
      assert.isBelow(state.produced, 512 * MB)
    } finally {
      await server.close()
    }
  })

  it("a request without a streamed body goes to the global fetch; a refused connection fails as fetch fails", async () => {
    const server = await slowServer(() => {})
    try {
      const res = await StreamingFetch.fetch(`${server.url}/upload`, { method: "POST", body: "plain text" })
      assert.strictEqual(((await res.json()) as { received: number }).received, 10)
    } finally {
      await server.close()
    }
    async function* one() {
      yield new Uint8Array(1)
    }
    const error = await StreamingFetch.fetch("http://127.0.0.1:1/upload", { method: "POST", body: one() as unknown as NonNullable<RequestInit["body"]> })
      .then(() => undefined, (e: unknown) => e)
    assert.instanceOf(error, TypeError)
    assert.match(String((error as TypeError).cause), /ECONNREFUSED/)
  })
})
