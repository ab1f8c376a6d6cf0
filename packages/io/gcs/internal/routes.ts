/**
 * The Cloud Storage emulator's HTTP surface: the JSON API's buckets and
 * objects under `/storage/v1` (or without it, as `STORAGE_EMULATOR_HOST`
 * clients call), simple, multipart and resumable uploads under
 * `/upload/storage/v1`, and downloads (`alt=media`, also under
 * `/download/storage/v1`) with ranges and `x-goog-hash`.
 *
 * @internal
 */
import { Effect, Stream } from "effect"
import type { HttpPlatform } from "effect/http"
import { HttpServerResponse } from "effect/http"
import * as fs from "node:fs"
import * as Hashes from "./hashes.ts"
import { apiPath, badRequest, GoogleError, json, notFound, parseMultipart, randomHex, readBody, readJson } from "./http.ts"
import type { Request } from "./http.ts"
import type { BucketRecord, ObjectRecord, Preconditions, Store, UploadSession } from "./store.ts"
import { bucketNameProblem, objectNameProblem } from "./store.ts"

/** the endpoints a fault can target */
export const ENDPOINTS = [
  "buckets.insert",
  "buckets.get",
  "buckets.list",
  "buckets.delete",
  "objects.insert",
  "objects.get",
  "objects.download",
  "objects.list",
  "objects.patch",
  "objects.delete"
] as const

export type EndpointName = typeof ENDPOINTS[number]

/** what the routes need */
export interface Runtime {
  readonly store: Store
  readonly fault: (name: EndpointName) => GoogleError | undefined
  /** counts a full download about to be sent; true: send it with its last byte changed */
  readonly corruptDownload: () => boolean
  /** counts an upload about to be answered; true: answer with a wrong `crc32c` */
  readonly wrongUploadHash: () => boolean
  /** largest object accepted */
  readonly maxObjectBytes: number
  readonly stats: { uploads: number; bytesUploaded: number; downloads: number }
}

// ===== resources =====

const originOf = (request: Request) => `http://${request.headers["host"] ?? "127.0.0.1"}`

const objectResource = (origin: string, o: ObjectRecord) => ({
  kind: "storage#object",
  id: `${o.bucket}/${o.name}/${o.generation}`,
  selfLink: `${origin}/storage/v1/b/${o.bucket}/o/${encodeURIComponent(o.name)}`,
  mediaLink: `${origin}/download/storage/v1/b/${o.bucket}/o/${encodeURIComponent(o.name)}?generation=${o.generation}&alt=media`,
  name: o.name,
  bucket: o.bucket,
  generation: o.generation,
  metageneration: o.metageneration,
  contentType: o.contentType,
  storageClass: "STANDARD",
  size: String(o.size),
  md5Hash: o.md5Hash,
  crc32c: o.crc32c,
  etag: Buffer.from(`${o.generation}/${o.metageneration}`).toString("base64"),
  timeCreated: o.timeCreated,
  updated: o.updated,
  timeStorageClassUpdated: o.timeCreated,
  ...(o.metadata === undefined ? {} : { metadata: o.metadata }),
  ...(o.contentEncoding === undefined ? {} : { contentEncoding: o.contentEncoding }),
  ...(o.contentDisposition === undefined ? {} : { contentDisposition: o.contentDisposition }),
  ...(o.cacheControl === undefined ? {} : { cacheControl: o.cacheControl })
})

const bucketResource = (origin: string, b: BucketRecord) => ({
  kind: "storage#bucket",
  id: b.name,
  selfLink: `${origin}/storage/v1/b/${b.name}`,
  projectNumber: "0",
  name: b.name,
  timeCreated: b.timeCreated,
  updated: b.timeCreated,
  metageneration: "1",
  location: b.location,
  locationType: "multi-region",
  storageClass: b.storageClass,
  etag: "CAE=",
  ...(b.labels === undefined ? {} : { labels: b.labels })
})

const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const bucketNotFound = () => notFound("The specified bucket does not exist.")

const objectNotFound = (bucket: string, name: string) => notFound(`No such object: ${bucket}/${name}`)

const conditionNotMet = () =>
  new GoogleError({ status: 412, message: "At least one of the pre-conditions you specified did not hold.", reason: "conditionNotMet" })

const preconditionsOf = (query: URLSearchParams): Preconditions => {
  const get = (k: string) => query.get(k) ?? undefined
  return {
    ifGenerationMatch: get("ifGenerationMatch"),
    ifGenerationNotMatch: get("ifGenerationNotMatch"),
    ifMetagenerationMatch: get("ifMetagenerationMatch"),
    ifMetagenerationNotMatch: get("ifMetagenerationNotMatch")
  }
}

/** `ifGenerationMatch=0`: only when the object does not exist */
const checkPreconditions = (p: Preconditions, current: ObjectRecord | undefined): GoogleError | undefined => {
  const generation = current?.generation ?? "0"
  if (p.ifGenerationMatch !== undefined && p.ifGenerationMatch !== generation) return conditionNotMet()
  if (p.ifGenerationNotMatch !== undefined && p.ifGenerationNotMatch === generation) return conditionNotMet()
  if (p.ifMetagenerationMatch !== undefined && (current === undefined || p.ifMetagenerationMatch !== current.metageneration)) return conditionNotMet()
  if (p.ifMetagenerationNotMatch !== undefined && current !== undefined && p.ifMetagenerationNotMatch === current.metageneration) {
    return conditionNotMet()
  }
  return undefined
}

const decodeName = (segment: string) => {
  try {
    return decodeURIComponent(segment)
  } catch {
    return segment
  }
}

// ===== buckets =====

const createBucket = (rt: Runtime, request: Request) =>
  Effect.gen(function*() {
    const body = yield* readJson(request)
    if (!isObject(body) || typeof body.name !== "string") return yield* badRequest("Required: the bucket's name.", "required")
    const problem = bucketNameProblem(body.name)
    if (problem !== undefined) return yield* badRequest(problem)
    if (rt.store.buckets.has(body.name)) {
      return yield* new GoogleError({
        status: 409,
        message: "Your previous request to create the named bucket succeeded and you already own it.",
        reason: "conflict"
      })
    }
    const record: BucketRecord = {
      name: body.name,
      project: request.query.get("project") ?? "",
      location: typeof body.location === "string" ? body.location.toUpperCase() : "US",
      storageClass: typeof body.storageClass === "string" ? body.storageClass : "STANDARD",
      timeCreated: new Date().toISOString(),
      labels: isObject(body.labels) ? body.labels as Record<string, string> : undefined
    }
    rt.store.putBucket(record)
    return json(bucketResource(originOf(request), record))
  })

const bucketOf = (rt: Runtime, name: string) =>
  Effect.suspend(() => {
    const bucket = rt.store.buckets.get(name)
    return bucket === undefined ? Effect.fail(bucketNotFound()) : Effect.succeed(bucket)
  })

const deleteBucket = (rt: Runtime, name: string) =>
  Effect.gen(function*() {
    const bucket = yield* bucketOf(rt, name)
    if (bucket.objects.size > 0) {
      return yield* new GoogleError({ status: 409, message: "The bucket you tried to delete is not empty.", reason: "conflict" })
    }
    rt.store.deleteBucket(name)
    return HttpServerResponse.empty({ status: 204 })
  })

// ===== objects: metadata, list, delete =====

const objectOf = (rt: Runtime, bucketName: string, name: string, query: URLSearchParams) =>
  Effect.gen(function*() {
    const bucket = yield* bucketOf(rt, bucketName)
    const object = bucket.objects.get(name)
    const generation = query.get("generation")
    if (object === undefined || (generation !== null && generation !== object.generation)) {
      return yield* objectNotFound(bucketName, name)
    }
    const failed = checkPreconditions(preconditionsOf(query), object)
    if (failed !== undefined) return yield* failed
    return object
  })

const listObjects = (rt: Runtime, request: Request, bucketName: string) =>
  Effect.gen(function*() {
    const bucket = yield* bucketOf(rt, bucketName)
    const q = request.query
    const prefix = q.get("prefix") ?? ""
    const delimiter = q.get("delimiter") ?? ""
    const startOffset = q.get("startOffset") ?? ""
    const endOffset = q.get("endOffset")
    const max = Math.max(1, Math.min(1000, Number(q.get("maxResults") ?? 1000) || 1000))
    const token = q.get("pageToken")
    const after = token === null ? undefined : Buffer.from(token, "base64").toString("utf8")
    const names = [...bucket.objects.keys()].filter((n) =>
      n.startsWith(prefix) && n >= startOffset && (endOffset === null || n < endOffset) && (after === undefined || n > after)
    ).sort()
    const items: Array<ObjectRecord> = []
    const prefixes: Array<string> = []
    let last: string | undefined
    let more = false
    for (const name of names) {
      if (delimiter !== "") {
        const i = name.indexOf(delimiter, prefix.length)
        if (i >= 0) {
          const p = name.slice(0, i + delimiter.length)
          if (prefixes.at(-1) === p) {
            last = name
            continue
          }
          if (items.length + prefixes.length >= max) {
            more = true
            break
          }
          prefixes.push(p)
          last = name
          continue
        }
      }
      if (items.length + prefixes.length >= max) {
        more = true
        break
      }
      items.push(bucket.objects.get(name)!)
      last = name
    }
    const origin = originOf(request)
    return json({
      kind: "storage#objects",
      ...(items.length > 0 ? { items: items.map((o) => objectResource(origin, o)) } : {}),
      ...(prefixes.length > 0 ? { prefixes } : {}),
      ...(more && last !== undefined ? { nextPageToken: Buffer.from(last).toString("base64") } : {})
    })
  })

const patchObject = (rt: Runtime, request: Request, bucketName: string, name: string) =>
  Effect.gen(function*() {
    const object = yield* objectOf(rt, bucketName, name, request.query)
    const body = yield* readJson(request)
    if (!isObject(body)) return yield* badRequest("The request body must be a JSON object.")
    const metadata = isObject(body.metadata)
      ? Object.fromEntries(
        Object.entries({ ...object.metadata, ...body.metadata }).filter(([, v]) => v !== null).map(([k, v]) => [k, String(v)])
      )
      : object.metadata
    const updated: ObjectRecord = {
      ...object,
      metageneration: String(Number(object.metageneration) + 1),
      updated: new Date().toISOString(),
      contentType: typeof body.contentType === "string" ? body.contentType : object.contentType,
      metadata
    }
    rt.store.updateObject(updated)
    return json(objectResource(originOf(request), updated))
  })

// ===== downloads =====

const parseRange = (header: string | undefined, size: number): { start: number; end: number } | "invalid" | undefined => {
  if (header === undefined) return undefined
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m === null) return undefined
  if (m[1] === "" && m[2] === "") return "invalid"
  if (m[1] === "") {
    const n = Math.min(size, Number(m[2]))
    return n === 0 ? "invalid" : { start: size - n, end: size - 1 }
  }
  const start = Number(m[1])
  const end = m[2] === "" ? size - 1 : Math.min(size - 1, Number(m[2]))
  if (start >= size || end < start) return "invalid"
  return { start, end }
}

const download = (rt: Runtime, request: Request, object: ObjectRecord) =>
  Effect.gen(function*() {
    const file = rt.store.dataPath(object)
    const headers: Record<string, string> = {
      "x-goog-hash": `crc32c=${object.crc32c},md5=${object.md5Hash}`,
      "x-goog-generation": object.generation,
      "x-goog-metageneration": object.metageneration,
      "x-goog-stored-content-encoding": object.contentEncoding ?? "identity",
      "x-goog-stored-content-length": String(object.size),
      "accept-ranges": "bytes",
      etag: Buffer.from(`${object.generation}/${object.metageneration}`).toString("base64"),
      "last-modified": new Date(object.updated).toUTCString()
    }
    const range = parseRange(request.headers["range"], object.size)
    if (range === "invalid") {
      return yield* new GoogleError({ status: 416, message: "The requested range cannot be satisfied.", reason: "requestedRangeNotSatisfiable" })
    }
    rt.stats.downloads++
    if (range === undefined && rt.corruptDownload() && object.size > 0) {
      const bytes = fs.readFileSync(file)
      bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff
      return HttpServerResponse.uint8Array(bytes, { contentType: object.contentType, headers })
    }
    if (range === undefined) {
      return yield* HttpServerResponse.file(file, { contentType: object.contentType, headers }).pipe(
        Effect.mapError(() => objectNotFound(object.bucket, object.name))
      )
    }
    return yield* HttpServerResponse.file(file, {
      status: 206,
      contentType: object.contentType,
      offset: range.start,
      bytesToRead: range.end - range.start + 1,
      headers: { ...headers, "content-range": `bytes ${range.start}-${range.end}/${object.size}` }
    }).pipe(Effect.mapError(() => objectNotFound(object.bucket, object.name)))
  })

// ===== uploads =====

/** `x-goog-hash: crc32c=…,md5=…` (or the resource's `crc32c` / `md5Hash`) that do not match the bytes received */
const checkClientHashes = (
  sent: { readonly crc32c?: string | undefined; readonly md5Hash?: string | undefined },
  got: { readonly crc32c: string; readonly md5Hash: string }
): GoogleError | undefined => {
  if (sent.crc32c !== undefined && sent.crc32c !== got.crc32c) {
    return badRequest(`Provided CRC32C "${sent.crc32c}" doesn't match calculated CRC32C "${got.crc32c}".`)
  }
  if (sent.md5Hash !== undefined && sent.md5Hash !== got.md5Hash) {
    return badRequest(`Provided MD5 hash "${sent.md5Hash}" doesn't match calculated MD5 hash "${got.md5Hash}".`)
  }
  return undefined
}

const hashHeader = (request: Request) => {
  const out: { crc32c?: string; md5Hash?: string } = {}
  for (const pair of (request.headers["x-goog-hash"] ?? "").split(",")) {
    const i = pair.indexOf("=")
    if (i < 0) continue
    const k = pair.slice(0, i).trim()
    const v = pair.slice(i + 1).trim()
    if (k === "crc32c") out.crc32c = v
    if (k === "md5") out.md5Hash = v
  }
  return out
}

/** the response to a finished upload: the object resource (its `crc32c` spoiled when the fault says so) */
const uploaded = (rt: Runtime, request: Request, object: ObjectRecord) => {
  const resource = objectResource(originOf(request), object)
  if (rt.wrongUploadHash()) resource.crc32c = Hashes.crc32cBase64(0xdeadbeef)
  return json(resource)
}

/** commits bytes held in `temp` as a new generation of the object */
const commit = (
  rt: Runtime,
  bucket: string,
  name: string,
  temp: string,
  digest: { readonly crc32c: string; readonly md5Hash: string; readonly size: number },
  resource: Readonly<Record<string, unknown>>,
  preconditions: Preconditions
): Effect.Effect<ObjectRecord, GoogleError> =>
  Effect.gen(function*() {
    const b = yield* bucketOf(rt, bucket)
    const current = b.objects.get(name)
    const failed = checkPreconditions(preconditions, current)
    if (failed !== undefined) return yield* failed
    const now = new Date().toISOString()
    const metadata = isObject(resource.metadata)
      ? Object.fromEntries(Object.entries(resource.metadata).map(([k, v]) => [k, String(v)]))
      : undefined
    const record: ObjectRecord = {
      name,
      bucket,
      generation: rt.store.nextGeneration(),
      metageneration: "1",
      contentType: typeof resource.contentType === "string" && resource.contentType !== "" ? resource.contentType : "application/octet-stream",
      size: digest.size,
      md5Hash: digest.md5Hash,
      crc32c: digest.crc32c,
      timeCreated: now,
      updated: now,
      metadata,
      contentEncoding: typeof resource.contentEncoding === "string" ? resource.contentEncoding : undefined,
      contentDisposition: typeof resource.contentDisposition === "string" ? resource.contentDisposition : undefined,
      cacheControl: typeof resource.cacheControl === "string" ? resource.cacheControl : undefined
    }
    fs.renameSync(temp, rt.store.dataPath(record))
    rt.store.putObject(record)
    rt.stats.uploads++
    rt.stats.bytesUploaded += record.size
    return record
  })

const simpleUpload = (rt: Runtime, request: Request, bucket: string, kind: "media" | "multipart") =>
  Effect.gen(function*() {
    yield* bucketOf(rt, bucket)
    const body = yield* readBody(request, rt.maxObjectBytes + 1024 * 1024)
    let resource: Record<string, unknown> = {}
    let data: Buffer = body
    if (kind === "multipart") {
      const parts = parseMultipart(request.headers["content-type"] ?? "", body)
      if (typeof parts === "string") return yield* badRequest(parts)
      if (parts.length !== 2) return yield* badRequest(`A multipart upload has 2 parts (metadata, data), got ${parts.length}.`)
      try {
        const parsed = JSON.parse(parts[0]!.body.toString("utf8")) as unknown
        if (isObject(parsed)) resource = parsed
      } catch {
        return yield* badRequest("The metadata part of the multipart upload is not JSON.", "parseError")
      }
      data = parts[1]!.body
      if (resource.contentType === undefined && parts[1]!.headers["content-type"] !== undefined) {
        resource = { ...resource, contentType: parts[1]!.headers["content-type"] }
      }
    } else {
      resource = { contentType: request.headers["content-type"] }
    }
    const name = request.query.get("name") ?? (typeof resource.name === "string" ? resource.name : undefined)
    if (name === undefined) return yield* badRequest("Required: the object's name.", "required")
    const problem = objectNameProblem(name)
    if (problem !== undefined) return yield* badRequest(problem)
    if (data.length > rt.maxObjectBytes) {
      return yield* new GoogleError({ status: 413, message: `The object is larger than ${rt.maxObjectBytes} bytes.`, reason: "invalid" })
    }
    const h = Hashes.hasher()
    h.update(data)
    const digest = h.digest()
    const mismatch = checkClientHashes(
      {
        crc32c: typeof resource.crc32c === "string" ? resource.crc32c : hashHeader(request).crc32c,
        md5Hash: typeof resource.md5Hash === "string" ? resource.md5Hash : hashHeader(request).md5Hash
      },
      digest
    )
    if (mismatch !== undefined) return yield* mismatch
    const temp = rt.store.tempPath(bucket)
    fs.writeFileSync(temp, data)
    const object = yield* commit(rt, bucket, name, temp, digest, resource, preconditionsOf(request.query)).pipe(
      Effect.tapError(() => Effect.sync(() => fs.rmSync(temp, { force: true })))
    )
    return uploaded(rt, request, object)
  })

const startResumable = (rt: Runtime, request: Request, bucket: string) =>
  Effect.gen(function*() {
    yield* bucketOf(rt, bucket)
    const body = yield* readJson(request)
    const resource: Record<string, unknown> = isObject(body) ? { ...body } : {}
    const name = request.query.get("name") ?? (typeof resource.name === "string" ? resource.name : undefined)
    if (name === undefined) return yield* badRequest("Required: the object's name.", "required")
    const problem = objectNameProblem(name)
    if (problem !== undefined) return yield* badRequest(problem)
    if (resource.contentType === undefined && request.headers["x-upload-content-type"] !== undefined) {
      resource.contentType = request.headers["x-upload-content-type"]
    }
    const preconditions = preconditionsOf(request.query)
    const failed = checkPreconditions(preconditions, rt.store.buckets.get(bucket)!.objects.get(name))
    if (failed !== undefined) return yield* failed
    const session: UploadSession = { id: randomHex(32), bucket, name, resource, preconditions, offset: 0 }
    rt.store.putUpload(session)
    fs.writeFileSync(rt.store.uploadPath(session.id), "")
    const location = `${originOf(request)}/upload/storage/v1/b/${bucket}/o?uploadType=resumable&name=${encodeURIComponent(name)}&upload_id=${session.id}`
    return HttpServerResponse.empty({ status: 200, headers: { location, "x-guploader-uploadid": session.id } })
  })

const incomplete = (offset: number) =>
  HttpServerResponse.empty({ status: 308, headers: offset > 0 ? { range: `bytes=0-${offset - 1}` } : {} })

const parseContentRange = (header: string | undefined) => {
  if (header === undefined) return { kind: "whole" as const }
  const status = /^bytes \*\/(\*|\d+)$/.exec(header.trim())
  if (status !== null) return { kind: "status" as const, total: status[1] === "*" ? undefined : Number(status[1]) }
  const m = /^bytes (\d+)-(\d+|\*)\/(\d+|\*)$/.exec(header.trim())
  if (m === null) return { kind: "invalid" as const }
  return {
    kind: "chunk" as const,
    start: Number(m[1]),
    end: m[2] === "*" ? undefined : Number(m[2]),
    total: m[3] === "*" ? undefined : Number(m[3])
  }
}

/** computes the checksums of a file, reading it 1 MiB at a time */
const digestFile = (file: string) => {
  const h = Hashes.hasher()
  const fd = fs.openSync(file, "r")
  try {
    const buffer = Buffer.allocUnsafe(1 << 20)
    let position = 0
    while (true) {
      const n = fs.readSync(fd, buffer, 0, buffer.length, position)
      if (n === 0) break
      h.update(buffer.subarray(0, n))
      position += n
    }
  } finally {
    fs.closeSync(fd)
  }
  return h.digest()
}

const resumableChunk = (rt: Runtime, request: Request, id: string) =>
  Effect.gen(function*() {
    const session = rt.store.uploads.get(id)
    if (session === undefined) return yield* notFound(`No such upload session: ${id}`)
    const range = parseContentRange(request.headers["content-range"])
    if (range.kind === "invalid") return yield* badRequest(`Invalid Content-Range: ${request.headers["content-range"]}`)
    if (session.done !== undefined) {
      yield* Stream.runDrain(request.raw.stream).pipe(Effect.ignore)
      return json(objectResource(originOf(request), session.done))
    }
    if (range.kind === "status") {
      yield* Stream.runDrain(request.raw.stream).pipe(Effect.ignore)
      return incomplete(session.offset)
    }
    const start = range.kind === "chunk" ? range.start : 0
    if (start > session.offset) {
      return yield* badRequest(`The chunk starts at byte ${start}, but only ${session.offset} bytes were received.`)
    }
    // bytes before the current offset were received already (a client resending a chunk): skip them
    let skip = session.offset - start
    const part = rt.store.uploadPath(id)
    const fd = fs.openSync(part, "a")
    yield* Stream.runForEach(request.raw.stream, (chunk) =>
      Effect.sync(() => {
        let data = chunk
        if (skip > 0) {
          const n = Math.min(skip, data.length)
          data = data.subarray(n)
          skip -= n
        }
        if (data.length === 0) return
        fs.writeSync(fd, data)
        session.offset += data.length
      })).pipe(
        Effect.ensuring(Effect.sync(() => fs.closeSync(fd))),
        Effect.mapError(() => badRequest("The upload was interrupted."))
      )
    if (session.offset > rt.maxObjectBytes) {
      rt.store.deleteUpload(id)
      return yield* new GoogleError({ status: 413, message: `The object is larger than ${rt.maxObjectBytes} bytes.`, reason: "invalid" })
    }
    const final = range.kind === "whole"
      || (range.kind === "chunk" && range.total !== undefined && session.offset >= range.total)
      || (range.kind === "chunk" && range.end === undefined && range.total === undefined)
    if (!final) return incomplete(session.offset)
    if (range.kind === "chunk" && range.total !== undefined && session.offset !== range.total) {
      return yield* badRequest(`The upload holds ${session.offset} bytes, the Content-Range says ${range.total}.`)
    }
    const digest = digestFile(part)
    const mismatch = checkClientHashes(hashHeader(request), digest)
    if (mismatch !== undefined) {
      rt.store.deleteUpload(id)
      return yield* mismatch
    }
    const temp = rt.store.tempPath(session.bucket)
    fs.renameSync(part, temp)
    const object = yield* commit(rt, session.bucket, session.name, temp, digest, session.resource, session.preconditions).pipe(
      Effect.tapError(() => Effect.sync(() => rt.store.deleteUpload(id)))
    )
    session.done = object
    rt.store.putUpload(session)
    return uploaded(rt, request, object)
  })

// ===== dispatch =====

const guarded = <A, R>(rt: Runtime, name: EndpointName, handler: Effect.Effect<A, GoogleError, R>) =>
  Effect.suspend(() => {
    const fault = rt.fault(name)
    return fault === undefined ? handler : Effect.fail(fault)
  })

/** answers one request */
export const handle = (rt: Runtime) => (
  request: Request
): Effect.Effect<HttpServerResponse.HttpServerResponse, GoogleError, HttpPlatform.HttpPlatform> => {
  const { method } = request
  const download_ = request.path.startsWith("/download/storage/v1/")
  const { path, upload } = download_
    ? { path: request.path.slice("/download/storage/v1".length), upload: false }
    : apiPath(request.path, "/storage/v1")
  const seg = path.split("/").slice(1)
  const origin = originOf(request)

  if (upload) {
    if (seg[0] === "b" && seg.length === 3 && seg[2] === "o") {
      const bucket = decodeName(seg[1]!)
      const uploadId = request.query.get("upload_id")
      if (uploadId !== null) {
        if (method === "DELETE") {
          rt.store.deleteUpload(uploadId)
          return Effect.succeed(HttpServerResponse.empty({ status: 499 }))
        }
        if (method === "PUT" || method === "POST") return guarded(rt, "objects.insert", resumableChunk(rt, request, uploadId))
      }
      if (method === "POST") {
        const type = request.query.get("uploadType") ?? "media"
        if (type === "resumable") return guarded(rt, "objects.insert", startResumable(rt, request, bucket))
        if (type === "multipart" || type === "media") return guarded(rt, "objects.insert", simpleUpload(rt, request, bucket, type))
        return Effect.fail(badRequest(`Unsupported uploadType: ${type}`))
      }
    }
    return Effect.fail(notFound(`Not found: ${method} ${request.path}`))
  }

  if (seg[0] === "b") {
    if (seg.length === 1) {
      if (method === "POST") return guarded(rt, "buckets.insert", createBucket(rt, request))
      if (method === "GET") {
        const project = request.query.get("project")
        return guarded(
          rt,
          "buckets.list",
          Effect.succeed(json({
            kind: "storage#buckets",
            items: [...rt.store.buckets.values()]
              .filter((b) => project === null || b.record.project === "" || b.record.project === project)
              .map((b) => bucketResource(origin, b.record))
          }))
        )
      }
    }
    const bucket = seg[1] === undefined ? "" : decodeName(seg[1])
    if (seg.length === 2) {
      if (method === "GET") return guarded(rt, "buckets.get", Effect.map(bucketOf(rt, bucket), (b) => json(bucketResource(origin, b.record))))
      if (method === "DELETE") return guarded(rt, "buckets.delete", deleteBucket(rt, bucket))
    }
    if (seg[2] === "o" && seg.length === 3 && method === "GET") return guarded(rt, "objects.list", listObjects(rt, request, bucket))
    if (seg[2] === "o" && seg.length >= 4) {
      // an object name may hold `/` (sent as %2F, or raw by some clients)
      const name = decodeName(seg.slice(3).join("/"))
      if (method === "GET" && (request.query.get("alt") === "media" || download_)) {
        return guarded(rt, "objects.download", Effect.flatMap(objectOf(rt, bucket, name, request.query), (o) => download(rt, request, o)))
      }
      if (method === "GET") {
        return guarded(rt, "objects.get", Effect.map(objectOf(rt, bucket, name, request.query), (o) => json(objectResource(origin, o))))
      }
      if (method === "PATCH" || method === "PUT") return guarded(rt, "objects.patch", patchObject(rt, request, bucket, name))
      if (method === "DELETE") {
        return guarded(
          rt,
          "objects.delete",
          Effect.map(objectOf(rt, bucket, name, request.query), (o) => {
            rt.store.deleteObject(o)
            return HttpServerResponse.empty({ status: 204 })
          })
        )
      }
    }
  }
  return Effect.fail(notFound(`Not found: ${method} ${request.path} (the Cloud Storage emulator serves buckets and objects)`))
}
