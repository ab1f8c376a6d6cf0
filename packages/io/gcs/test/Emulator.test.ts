/**
 * The Cloud Storage emulator, driven only through the official
 * `@google-cloud/storage` client with its integrity checks on (the default).
 */
import { CRC32C, Storage } from "@google-cloud/storage"
import { Effect } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import * as Emulator from "../Emulator.ts"

const tmp = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), `offpeak-gcs-test-${prefix}-`))

/** runs `f` against a fresh emulator, closed afterwards */
const withEmulator = <A>(options: Emulator.Options, f: (storage: Storage, emulator: Emulator.Handle) => Promise<A>): Promise<A> =>
  Effect.runPromise(
    Effect.scoped(
      Effect.flatMap(Emulator.serve(options), (emulator) =>
        Effect.promise(() =>
          f(
            new Storage({
              projectId: "test-proj",
              apiEndpoint: emulator.url,
              // retries quickly (the default waits a second and more between tries)
              retryOptions: { retryDelayMultiplier: 1.01, maxRetries: 3, totalTimeout: 60 }
            }),
            emulator
          )
        ))
    )
  )

const crc32cOf = (data: Buffer) => {
  const c = new CRC32C()
  c.update(data)
  return c.toString()
}
const md5Of = (data: Buffer) => crypto.createHash("md5").update(data).digest("base64")

/** deterministic bytes, not compressible, not all text */
const bytes = (n: number, seed = 1) => {
  const out = Buffer.alloc(n)
  let x = seed
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) & 0x7fffffff
    out[i] = x >>> 16
  }
  return out
}

describe("Cloud Storage emulator through @google-cloud/storage", () => {
  it("buckets: create, get, list, a second create is 409, delete only when empty", async () => {
    await withEmulator({}, async (storage) => {
      const [bucket] = await storage.createBucket("batch-in")
      expect(bucket.name).toBe("batch-in")
      const [meta] = await bucket.getMetadata()
      expect(meta.location).toBe("US")
      await expect(storage.createBucket("batch-in")).rejects.toMatchObject({ code: 409 })
      const [buckets] = await storage.getBuckets()
      expect(buckets.map((b) => b.name)).toEqual(["batch-in"])
      await bucket.file("x").save("x", { resumable: false })
      await expect(bucket.delete()).rejects.toMatchObject({ code: 409 })
      await bucket.file("x").delete()
      await bucket.delete()
      const [exists] = await storage.bucket("batch-in").exists()
      expect(exists).toBe(false)
    })
  })

  it("multipart, resumable (one request and 256 KiB chunks) and file uploads: crc32c and md5Hash are the bytes' own, downloads verify", async () => {
    await withEmulator({}, async (storage, emulator) => {
      const [bucket] = await storage.createBucket("data")
      const small = Buffer.from('{"id":1}\n{"id":2}\n')
      const big = bytes(3 * 1024 * 1024 + 123)
      await bucket.file("small.jsonl").save(small, { resumable: false, contentType: "application/x-ndjson" })
      await bucket.file("dir/big.bin").save(big) // resumable, one request
      // a resumable upload in chunks of 256 KiB: each chunk answered 308 with the range received
      await new Promise<void>((resolve, reject) =>
        bucket.file("dir/chunked.bin").createWriteStream({ resumable: true, chunkSize: 256 * 1024 }).on("error", reject).on("finish", resolve).end(big)
      )
      const local = path.join(tmp("upload"), "local.jsonl")
      fs.writeFileSync(local, small)
      await bucket.upload(local, { destination: "dir/up.jsonl" })

      for (const [name, data] of [["small.jsonl", small], ["dir/big.bin", big], ["dir/chunked.bin", big], ["dir/up.jsonl", small]] as const) {
        const [meta] = await bucket.file(name).getMetadata()
        expect(meta.crc32c, name).toBe(crc32cOf(data))
        expect(meta.md5Hash, name).toBe(md5Of(data))
        expect(Number(meta.size), name).toBe(data.length)
        const [downloaded] = await bucket.file(name).download() // validation: crc32c and md5 against x-goog-hash
        expect(downloaded.equals(data), name).toBe(true)
      }
      const [meta] = await bucket.file("small.jsonl").getMetadata()
      expect(meta.contentType).toBe("application/x-ndjson")
      const stats = await Effect.runPromise(emulator.stats)
      console.log(`gcs emulator: ${stats.uploads} uploads (${(stats.bytesUploaded / 1024 / 1024).toFixed(2)} MiB), ${stats.downloads} downloads verified by the client`)
      expect(stats.uploads).toBe(4)
    })
  })

  it("ranged reads, list with prefix / delimiter / pages, metadata update, delete, generation preconditions", async () => {
    await withEmulator({}, async (storage) => {
      const [bucket] = await storage.createBucket("data")
      const data = bytes(10_000, 7)
      await bucket.file("a/1.bin").save(data, { resumable: false })
      const ranged = await new Promise<Buffer>((resolve, reject) => {
        const chunks: Array<Buffer> = []
        bucket.file("a/1.bin").createReadStream({ start: 100, end: 199 }).on("data", (c: Buffer) => chunks.push(c)).on("error", reject).on(
          "end",
          () => resolve(Buffer.concat(chunks))
        )
      })
      expect(ranged.equals(data.subarray(100, 200))).toBe(true)

      for (const name of ["a/2.bin", "a/sub/3.bin", "b/4.bin", "c.bin"]) await bucket.file(name).save("x", { resumable: false })
      const [underA] = await bucket.getFiles({ prefix: "a/" })
      expect(underA.map((f) => f.name)).toEqual(["a/1.bin", "a/2.bin", "a/sub/3.bin"])
      const [top, , response] = await bucket.getFiles({ delimiter: "/", autoPaginate: false })
      expect(top.map((f) => f.name)).toEqual(["c.bin"])
      expect((response as { prefixes?: Array<string> }).prefixes).toEqual(["a/", "b/"])
      // pages of 2: the client follows nextPageToken
      const paged: Array<string> = []
      let query: Record<string, unknown> | null = { maxResults: 2, autoPaginate: false }
      let pages = 0
      while (query !== null) {
        const [page, next]: [Array<{ name: string }>, Record<string, unknown> | null] = await bucket.getFiles(query) as any
        paged.push(...page.map((f) => f.name))
        pages++
        query = next
      }
      expect(paged).toEqual(["a/1.bin", "a/2.bin", "a/sub/3.bin", "b/4.bin", "c.bin"])
      expect(pages).toBe(3)

      await bucket.file("c.bin").setMetadata({ metadata: { run: "r1" } })
      const [meta] = await bucket.file("c.bin").getMetadata()
      expect(meta.metadata).toEqual({ run: "r1" })
      expect(meta.metageneration).toBe("2")

      // ifGenerationMatch: 0 creates only when the object does not exist
      await expect(bucket.file("c.bin").save("y", { resumable: false, preconditionOpts: { ifGenerationMatch: 0 } })).rejects.toMatchObject({ code: 412 })
      await bucket.file("new.bin").save("y", { resumable: false, preconditionOpts: { ifGenerationMatch: 0 } })
      await bucket.file("c.bin").delete()
      await expect(bucket.file("c.bin").download()).rejects.toMatchObject({ code: 404 })
      const [exists] = await bucket.file("c.bin").exists()
      expect(exists).toBe(false)
    })
  })

  it("integrity: a spoiled download fails CONTENT_DOWNLOAD_MISMATCH; an upload answered with a wrong crc32c is deleted and fails", async () => {
    await withEmulator({ corruptDownloads: 1, wrongUploadHashes: 1 }, async (storage) => {
      const [bucket] = await storage.createBucket("data")
      const data = bytes(50_000, 3)
      const failed = await bucket.file("x.bin").save(data, { resumable: false }).then(() => undefined, (e: { code?: string }) => e)
      expect(failed).toMatchObject({ code: "FILE_NO_UPLOAD" })
      const [exists] = await bucket.file("x.bin").exists()
      expect(exists, "the client deleted the object it could not verify").toBe(false)
      await bucket.file("x.bin").save(data, { resumable: false })
      const spoiled = await bucket.file("x.bin").download().then(() => undefined, (e: { code?: string }) => e)
      expect(spoiled).toMatchObject({ code: "CONTENT_DOWNLOAD_MISMATCH" })
      const [good] = await bucket.file("x.bin").download()
      expect(good.equals(data)).toBe(true)
      console.log(`gcs integrity: spoiled download -> ${(spoiled as { code: string }).code}; wrong upload hash -> ${(failed as { code: string }).code}`)
    })
  })

  it("faults: the first N calls of an endpoint fail with the status asked for; rates are the same for the same seed", async () => {
    const endpointFaults: Emulator.Options["endpointFaults"] = [
      { endpoint: "objects.get", status: 503, times: 1 },
      { endpoint: "objects.list", status: 429, times: 1 },
      { endpoint: "objects.download", status: 500, times: 1 },
      { endpoint: "buckets.get", status: 400, rate: 0.5 }
    ]
    const failures = await withEmulator(
      { seed: 7, endpointFaults },
      async (storage) => {
        const noRetry = new Storage({ projectId: "test-proj", apiEndpoint: (storage as any).apiEndpoint, retryOptions: { autoRetry: false } })
        const [bucket] = await storage.createBucket("data")
        await bucket.file("x.jsonl").save("hello\n", { resumable: false })
        const file = noRetry.bucket("data").file("x.jsonl")
        await expect(file.getMetadata()).rejects.toMatchObject({ code: 503 })
        expect((await file.getMetadata())[0].size).toBe("6")
        await expect(noRetry.bucket("data").getFiles()).rejects.toMatchObject({ code: 429 })
        expect((await noRetry.bucket("data").getFiles())[0].map((f) => f.name)).toEqual(["x.jsonl"])
        await expect(file.download()).rejects.toMatchObject({ code: 500 })
        expect((await file.download())[0].toString()).toBe("hello\n")
        const outcomes: Array<boolean> = []
        for (let i = 0; i < 20; i++) outcomes.push(await noRetry.bucket("data").getMetadata().then(() => true, () => false))
        return outcomes
      }
    )
    const again = await withEmulator({ seed: 7, endpointFaults }, async (storage) => {
      await storage.createBucket("data")
      const noRetry = new Storage({ projectId: "test-proj", apiEndpoint: (storage as any).apiEndpoint, retryOptions: { autoRetry: false } })
      const outcomes: Array<boolean> = []
      for (let i = 0; i < 20; i++) outcomes.push(await noRetry.bucket("data").getMetadata().then(() => true, () => false))
      return outcomes
    })
    expect(again).toEqual(failures)
    const failed = failures.filter((ok) => !ok).length
    expect(failed).toBeGreaterThan(3)
    expect(failed).toBeLessThan(17)
    console.log(`gcs faults: buckets.get at rate 0.5, seed 7: ${failed}/20 failed, the same 20 outcomes on a second emulator`)
  }, 30_000)

  it("state on disk: a new emulator on the same folder serves the objects and continues an interrupted resumable upload", async () => {
    const dir = tmp("state")
    const data = bytes(700 * 1024, 9)
    const uri = await withEmulator({ dir }, async (storage) => {
      const [bucket] = await storage.createBucket("keep")
      await bucket.file("kept.bin").save(data.subarray(0, 1000), { resumable: false })
      const [uri] = await bucket.file("resumed.bin").createResumableUpload()
      // the first 256 KiB arrive, then the process "dies"
      const first = await fetch(uri, { method: "PUT", headers: { "content-range": `bytes 0-${256 * 1024 - 1}/*` }, body: data.subarray(0, 256 * 1024) })
      expect(first.status).toBe(308)
      expect(first.headers.get("range")).toBe(`bytes=0-${256 * 1024 - 1}`)
      return uri
    })
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const emulator = yield* Emulator.serve({ dir })
      // the session URL names the old port: point it at the new one
      const moved = uri.replace(/^http:\/\/[^/]+/, emulator.url)
      const storage = new Storage({ projectId: "test-proj", apiEndpoint: emulator.url })
      const bucket = storage.bucket("keep")
      const [kept] = yield* Effect.promise(() => bucket.file("kept.bin").download())
      expect(kept.equals(data.subarray(0, 1000))).toBe(true)
      // the client asks where the session stands (308, Range) and sends only the rest
      yield* Effect.promise(() =>
        new Promise<void>((resolve, reject) =>
          bucket.file("resumed.bin").createWriteStream({ uri: moved, resumable: true }).on("error", reject).on("finish", resolve).end(data)
        )
      )
      const [resumed] = yield* Effect.promise(() => bucket.file("resumed.bin").download())
      expect(resumed.equals(data)).toBe(true)
      const stats = yield* emulator.stats
      expect(stats.objects).toBe(2)
    })))
  })

  it("STORAGE_EMULATOR_HOST: paths without /storage/v1 are served the same", async () => {
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const emulator = yield* Emulator.serve({})
      const before = process.env.STORAGE_EMULATOR_HOST
      process.env.STORAGE_EMULATOR_HOST = emulator.url
      try {
        const storage = new Storage({ projectId: "test-proj" })
        yield* Effect.promise(() => storage.createBucket("envb"))
        yield* Effect.promise(() => storage.bucket("envb").file("dir/up.jsonl").save("{}\n", { resumable: false }))
        const [files] = yield* Effect.promise(() => storage.bucket("envb").getFiles({ prefix: "dir/" }))
        expect(files.map((f) => f.name)).toEqual(["dir/up.jsonl"])
        const [got] = yield* Effect.promise(() => storage.bucket("envb").file("dir/up.jsonl").download())
        expect(got.toString()).toBe("{}\n")
      } finally {
        if (before === undefined) delete process.env.STORAGE_EMULATOR_HOST
        else process.env.STORAGE_EMULATOR_HOST = before
      }
    })))
  })
})
