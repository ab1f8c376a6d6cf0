/**
 * The Cloud Storage emulator's state on disk, with an index in memory.
 *
 * ```
 * <dir>/buckets/<bucket>/bucket.json                     the bucket resource
 * <dir>/buckets/<bucket>/objects/<sha256(name)>.json     the object resource (committed last: it is the commit)
 * <dir>/buckets/<bucket>/objects/<sha256(name)>.<generation>.data   the bytes of that generation
 * <dir>/uploads/<id>.json, <id>.part                      resumable upload sessions
 * ```
 *
 * Every write goes to a temp file, is fsynced and renamed: a process killed at
 * any point leaves each object either as it was or as it became, and a new
 * emulator on the same folder carries on.
 *
 * @internal
 */
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { writeAtomic } from "./http.ts"

/** an object as the JSON API describes it (the fields the emulator keeps) */
export interface ObjectRecord {
  readonly name: string
  readonly bucket: string
  readonly generation: string
  readonly metageneration: string
  readonly contentType: string
  readonly size: number
  readonly md5Hash: string
  readonly crc32c: string
  readonly timeCreated: string
  readonly updated: string
  readonly metadata?: Readonly<Record<string, string>> | undefined
  readonly contentEncoding?: string | undefined
  readonly contentDisposition?: string | undefined
  readonly cacheControl?: string | undefined
}

export interface BucketRecord {
  readonly name: string
  readonly project: string
  readonly location: string
  readonly storageClass: string
  readonly timeCreated: string
  readonly labels?: Readonly<Record<string, string>> | undefined
}

/** a resumable upload in progress */
export interface UploadSession {
  readonly id: string
  readonly bucket: string
  readonly name: string
  /** object fields given when the session started (contentType, metadata, …) */
  readonly resource: Readonly<Record<string, unknown>>
  /** preconditions given when the session started */
  readonly preconditions: Preconditions
  /** bytes received so far */
  offset: number
  /** the object, once the upload is final */
  done?: ObjectRecord | undefined
}

export interface Preconditions {
  readonly ifGenerationMatch?: string | undefined
  readonly ifGenerationNotMatch?: string | undefined
  readonly ifMetagenerationMatch?: string | undefined
  readonly ifMetagenerationNotMatch?: string | undefined
}

const hashName = (name: string) => crypto.createHash("sha256").update(name).digest("hex")

/** Cloud Storage's bucket naming rules, short: 3-63 characters of a-z, 0-9, `-`, `_`, `.`, starting and ending alphanumeric */
export const bucketNameProblem = (name: string): string | undefined =>
  /^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$/.test(name) ? undefined : `Invalid bucket name: '${name}'`

/** an object name: 1-1024 bytes of UTF-8, no carriage return or line feed */
export const objectNameProblem = (name: string): string | undefined =>
  name.length === 0 || Buffer.byteLength(name) > 1024 || /[\r\n]/.test(name) || name === "." || name === ".."
    ? `Invalid object name: '${name.slice(0, 80)}'`
    : undefined

export class Store {
  readonly buckets = new Map<string, { readonly record: BucketRecord; readonly objects: Map<string, ObjectRecord> }>()
  readonly uploads = new Map<string, UploadSession>()
  private lastGeneration = 0
  readonly dir: string

  constructor(dir: string) {
    this.dir = dir
    fs.mkdirSync(path.join(dir, "buckets"), { recursive: true })
    fs.mkdirSync(path.join(dir, "uploads"), { recursive: true })
    for (const bucket of fs.readdirSync(path.join(dir, "buckets"))) {
      const file = path.join(dir, "buckets", bucket, "bucket.json")
      if (!fs.existsSync(file)) continue
      const record = JSON.parse(fs.readFileSync(file, "utf8")) as BucketRecord
      const objects = new Map<string, ObjectRecord>()
      const objectsDir = path.join(dir, "buckets", bucket, "objects")
      for (const entry of fs.existsSync(objectsDir) ? fs.readdirSync(objectsDir) : []) {
        if (entry.endsWith(".tmp")) {
          fs.rmSync(path.join(objectsDir, entry), { force: true })
          continue
        }
        if (!entry.endsWith(".json")) continue
        const object = JSON.parse(fs.readFileSync(path.join(objectsDir, entry), "utf8")) as ObjectRecord
        objects.set(object.name, object)
        this.lastGeneration = Math.max(this.lastGeneration, Number(object.generation))
      }
      // data files of generations no object points at (a crash between writing the bytes and the commit)
      for (const entry of fs.existsSync(objectsDir) ? fs.readdirSync(objectsDir) : []) {
        const m = /^([0-9a-f]{64})\.(\d+)\.data$/.exec(entry)
        if (m === null) continue
        const live = [...objects.values()].some((o) => hashName(o.name) === m[1] && o.generation === m[2])
        if (!live) fs.rmSync(path.join(objectsDir, entry), { force: true })
      }
      this.buckets.set(record.name, { record, objects })
    }
    for (const entry of fs.readdirSync(path.join(dir, "uploads"))) {
      if (!entry.endsWith(".json")) continue
      const session = JSON.parse(fs.readFileSync(path.join(dir, "uploads", entry), "utf8")) as UploadSession
      const part = this.uploadPath(session.id)
      session.offset = fs.existsSync(part) ? fs.statSync(part).size : 0
      this.uploads.set(session.id, session)
    }
  }

  /** a new generation number: microseconds since the epoch, strictly increasing */
  nextGeneration(): string {
    this.lastGeneration = Math.max(this.lastGeneration + 1, Date.now() * 1000)
    return String(this.lastGeneration)
  }

  private objectsDir(bucket: string) {
    return path.join(this.dir, "buckets", bucket, "objects")
  }

  dataPath(object: Pick<ObjectRecord, "bucket" | "name" | "generation">): string {
    return path.join(this.objectsDir(object.bucket), `${hashName(object.name)}.${object.generation}.data`)
  }

  /** a temp file in the bucket's folder (so a rename to the data path stays on one file system) */
  tempPath(bucket: string): string {
    return path.join(this.objectsDir(bucket), `${crypto.randomBytes(8).toString("hex")}.tmp`)
  }

  uploadPath(id: string): string {
    return path.join(this.dir, "uploads", `${id}.part`)
  }

  putBucket(record: BucketRecord) {
    fs.mkdirSync(this.objectsDir(record.name), { recursive: true })
    writeAtomic(path.join(this.dir, "buckets", record.name, "bucket.json"), JSON.stringify(record))
    this.buckets.set(record.name, { record, objects: new Map() })
  }

  deleteBucket(name: string) {
    fs.rmSync(path.join(this.dir, "buckets", name), { recursive: true, force: true })
    this.buckets.delete(name)
  }

  /** commits an object whose bytes are already at `dataPath(record)`; the previous generation's bytes are removed */
  putObject(record: ObjectRecord) {
    const bucket = this.buckets.get(record.bucket)!
    const previous = bucket.objects.get(record.name)
    writeAtomic(path.join(this.objectsDir(record.bucket), `${hashName(record.name)}.json`), JSON.stringify(record))
    bucket.objects.set(record.name, record)
    if (previous !== undefined && previous.generation !== record.generation) fs.rmSync(this.dataPath(previous), { force: true })
  }

  /** rewrites an object's metadata (same bytes, same generation) */
  updateObject(record: ObjectRecord) {
    writeAtomic(path.join(this.objectsDir(record.bucket), `${hashName(record.name)}.json`), JSON.stringify(record))
    this.buckets.get(record.bucket)!.objects.set(record.name, record)
  }

  deleteObject(record: ObjectRecord) {
    fs.rmSync(path.join(this.objectsDir(record.bucket), `${hashName(record.name)}.json`), { force: true })
    fs.rmSync(this.dataPath(record), { force: true })
    this.buckets.get(record.bucket)?.objects.delete(record.name)
  }

  putUpload(session: UploadSession) {
    const { offset: _offset, ...stored } = session
    writeAtomic(path.join(this.dir, "uploads", `${session.id}.json`), JSON.stringify(stored))
    this.uploads.set(session.id, session)
  }

  deleteUpload(id: string) {
    fs.rmSync(path.join(this.dir, "uploads", `${id}.json`), { force: true })
    fs.rmSync(this.uploadPath(id), { force: true })
    this.uploads.delete(id)
  }
}
