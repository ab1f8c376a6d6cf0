/**
 * The live display of `offpeak run`, driven by a run's events on a fake terminal: what each event says, that the
 * status is erased before every line printed above it (nothing garbles the bar), that no status line is wider than
 * the terminal, that nothing but plain text goes off a terminal or under NO_COLOR, the percent, rate and ETA, and the
 * plain progress line's cadence.
 */
import * as Progress from "@offpeak/core/Progress"
import type * as RunEvent from "@offpeak/core/RunEvent"
import { describe, expect, it } from "vitest"
import * as Display from "../packages/core/src/internal/cli/display.ts"
import * as Summary from "../packages/core/src/internal/cli/summary.ts"

/** a terminal that keeps what was written, and the screen it would show (cursor moves and erasures applied) */
const fakeTerminal = (options: { isTTY: boolean; color?: boolean; columns?: number; unicode?: boolean }) => {
  const writes: Array<string> = []
  const terminal: Display.Terminal = {
    write: (text) => void writes.push(text),
    isTTY: options.isTTY,
    color: options.color ?? false,
    unicode: options.unicode ?? true,
    columns: () => options.columns ?? 100
  }
  /** the lines on screen: a minimal VT100 (\r, \n, ESC[2K, ESC[1A, ESC[?25l/h, colours ignored) */
  const screen = () => {
    const lines: Array<string> = [""]
    let row = 0
    let col = 0
    const text = writes.join("")
    for (let i = 0; i < text.length; i++) {
      const ch = text[i]!
      if (ch === "\x1b") {
        const m = /^\x1b\[([0-9;?]*)([A-Za-z])/.exec(text.slice(i))!
        const [all, arg, cmd] = m
        if (cmd === "A") row = Math.max(0, row - Number(arg || 1))
        if (cmd === "K" && arg === "2") lines[row] = ""
        i += all!.length - 1
        continue
      }
      if (ch === "\r") col = 0
      else if (ch === "\n") {
        row++
        col = 0
        if (lines[row] === undefined) lines[row] = ""
      } else {
        const line = lines[row] ?? ""
        lines[row] = line.slice(0, col).padEnd(col) + ch + line.slice(col + 1)
        col++
      }
    }
    return lines
  }
  return { terminal, writes, screen }
}

const events = (runId: string): Array<RunEvent.RunEvent> => [
  { _tag: "RunStarted", runId, pipeline: "tickets", mode: "batch", resumed: false, delivered: 0, dead: 0, openBatches: 0 },
  { _tag: "SourceSized", rows: 1_000, estimate: false },
  { _tag: "RowsRead", rows: 500, skipped: 0 },
  { _tag: "BatchSealed", batchId: `${runId}-b00001`, requests: 500, bytes: 10_000, mode: "batch" },
  { _tag: "BackingOff", operation: "openai batches.create", reason: "RateLimited: 429 Too Many Requests", delayMs: 1_500 },
  { _tag: "BatchSubmitted", batchId: `${runId}-b00001`, remoteId: "batch_abc", requests: 500, mode: "batch" },
  { _tag: "BatchWatched", batchId: `${runId}-b00001`, mode: "batch" },
  { _tag: "BatchProgress", batchId: `${runId}-b00001`, done: 100, total: 500, providerState: "in_progress" }
]

describe("the live display", () => {
  it("prints a line for each event that changes the picture, and erases the status before each", () => {
    const runId = "tickets-20250101-000000-abcd"
    const counters = Progress.make()
    let now = 1_000_000
    const { terminal, writes, screen } = fakeTerminal({ isTTY: true, columns: 120 })
    const display = Display.make({ terminal, counters, now: () => now })
    const emit = (e: RunEvent.RunEvent) => {
      Progress.update(counters, e)
      display.event(e)
    }
    for (const e of events(runId)) emit(e)
    now += 4_000
    display.tick()
    emit({ _tag: "BatchEnded", batchId: `${runId}-b00001`, mode: "batch", providerState: "expired", completed: 380, failed: 20 })
    emit({ _tag: "PartWritten", seq: 1, delivered: 380, dead: 0, refused: 0 })
    emit({ _tag: "RetryRound", round: 1, requests: 120, waitMs: 1_000 })
    emit({ _tag: "BatchSplit", batchId: `${runId}-b00002`, into: [60, 60], reason: "413 File is too large" })
    // a batch the deadline cancelled: its unanswered requests are said as cancelled, not expired
    emit({ _tag: "BatchSubmitted", batchId: `${runId}-b00003`, remoteId: "batch_def", requests: 50, mode: "batch" })
    emit({ _tag: "BatchEnded", batchId: `${runId}-b00003`, mode: "batch", providerState: "cancelled", completed: 20, failed: 0 })
    emit({ _tag: "RetryRound", round: 2, requests: 30, waitMs: 0 })
    emit({
      _tag: "ProviderUnreachable",
      provider: "openai",
      operation: "files.create",
      message: "cannot connect to 127.0.0.1:9: connection refused (connect ECONNREFUSED 127.0.0.1:9)",
      delayMs: 2_000,
      nextAttemptAt: now + 2_000
    })
    now += 2_000
    display.tick()
    const lines = screen().filter((l) => l.trim() !== "")
    console.log(lines.join("\n"))
    const said = lines.join("\n")
    expect(said).toContain(`run ${runId} started (batch mode)`)
    expect(said).toMatch(/rate limited \(429, the 1st time\) on openai batches\.create: backing off 1\.5 s/)
    expect(said).toContain("batch b00001 submitted: 500 requests (batch_abc)")
    expect(said).toMatch(/batch b00001 expired at the provider after 4\.0 s: 380 of 500 answered; the other 120 go to a retry round \(while attempts remain\)/)
    expect(said).toMatch(/retry round 1: 120 requests go out again in 1\.0 s \(120 unanswered in expired batches\)/)
    expect(said).toMatch(/batch b00003 cancelled at the provider.*: 20 of 50 answered; the other 30 go to a retry round/)
    expect(said).toMatch(/retry round 2: 30 requests go out again in .* \(30 unanswered in cancelled batches\)/)
    expect(said).toContain("batch b00002 split into 60 + 60 requests: 413 File is too large")
    expect(said).toMatch(/provider unreachable: openai files\.create: cannot connect to 127\.0\.0\.1:9: connection refused .*next attempt at \d\d:\d\d:\d\d \(in 2\.0 s\)/)
    // exactly one status (two lines) on screen, at the bottom: every earlier one was erased before a line went above it
    expect(lines.filter((l) => l.includes("elapsed"))).toHaveLength(1)
    expect(lines.filter((l) => l.startsWith("batches "))).toHaveLength(1)
    expect(lines.at(-2)).toMatch(/^\s*38% \[█+▒*░+\] 380\/1,000 rows · [\d.]+ rows\/s · 0:06 elapsed · ETA \d+:\d\d$/)
    expect(lines.at(-1)).toMatch(/^batches 2 ended · succeeded 380 · failed 0 · retry rounds 2$/)
    // the cursor is hidden while the status is drawn and shown again at the end
    expect(writes.join("")).toContain("\x1b[?25l")
    display.close()
    expect(writes.at(-1)).toContain("\x1b[?25h")
    expect(screen().filter((l) => l.includes("elapsed"))).toHaveLength(0)
  })

  it("never draws a status line wider than the terminal, whatever its width", () => {
    for (const columns of [20, 40, 60, 80, 200]) {
      const counters = Progress.make()
      const { terminal, screen } = fakeTerminal({ isTTY: true, columns, color: true })
      const display = Display.make({ terminal, counters, now: () => 5_000 })
      for (const e of events("a-very-long-run-identifier-that-goes-on-and-on")) {
        Progress.update(counters, e)
        display.event(e)
      }
      display.tick()
      const status = screen().slice(-2)
      console.log(`${columns} columns: ${JSON.stringify(status)}`)
      for (const line of status) expect(line.length).toBeLessThanOrEqual(Math.max(20, columns - 1))
    }
  })

  it("off a terminal: plain lines, no escape codes, one progress line per interval and not the same one twice", () => {
    const counters = Progress.make()
    let now = 0
    const { terminal, writes } = fakeTerminal({ isTTY: false })
    const display = Display.make({ terminal, counters, intervalMs: 5_000, now: () => now })
    for (const e of events("r")) {
      Progress.update(counters, e)
      display.event(e)
    }
    for (let t = 0; t <= 30_000; t += 500) {
      now = t
      if (t === 12_000) Progress.update(counters, { _tag: "PartWritten", seq: 1, delivered: 100, dead: 0, refused: 0 })
      display.tick()
    }
    display.close()
    const text = writes.join("")
    console.log(text)
    expect(text).not.toMatch(/\x1b/)
    const progress = text.split("\n").filter((l) => l.includes("submitted 500"))
    // at 5 s, then the next change (at 15 s): the same figures are not printed again within a minute
    expect(progress).toHaveLength(2)
    expect(progress[0]).toMatch(/^\d\d:\d\d:\d\d read 500 · submitted 500 · in flight 1 · succeeded 0 · failed 0 · 0% of 1,000 rows/)
    expect(progress[1]).toMatch(/succeeded 100 · failed 0 · 10% of 1,000 rows/)
  })

  it("colour only when the terminal allows it: NO_COLOR, TERM=dumb and pipes get none", () => {
    const tty = Object.assign(Object.create(process.stderr), { isTTY: true, columns: 80 }) as NodeJS.WriteStream
    expect(Display.terminalOf(tty, { LANG: "en_US.UTF-8" }).color).toBe(true)
    expect(Display.terminalOf(tty, { LANG: "en_US.UTF-8", NO_COLOR: "1" }).color).toBe(false)
    expect(Display.terminalOf(tty, { TERM: "dumb" }).isTTY).toBe(false)
    expect(Display.terminalOf(tty, { LANG: "C" }).unicode).toBe(false)
    const pipe = Object.assign(Object.create(process.stderr), { isTTY: false }) as NodeJS.WriteStream
    expect(Display.terminalOf(pipe, {}).color).toBe(false)
    // a coloured status still fits: escape codes do not count towards the width
    const counters = Progress.make()
    const { terminal, writes } = fakeTerminal({ isTTY: true, color: true, columns: 80, unicode: false })
    const display = Display.make({ terminal, counters, now: () => 10_000 })
    for (const e of events("r")) {
      Progress.update(counters, e)
      display.event(e)
    }
    display.tick()
    expect(writes.join("")).toMatch(/\x1b\[32m|\x1b\[36m/)
    expect(writes.join("")).toContain("[")
    expect(writes.join("")).not.toContain("█")
  })

  it("a storm of 429s or an outage says itself a few times, not once per call", () => {
    const counters = Progress.make("r")
    let now = 0
    const { terminal, writes } = fakeTerminal({ isTTY: false })
    const display = Display.make({ terminal, counters, now: () => now })
    for (let i = 0; i < 40; i++) {
      now = i * 250
      display.event({ _tag: "BackingOff", operation: "openai batches.create", reason: "RateLimited: 429", delayMs: 250 })
    }
    const lines = writes.join("").split("\n").filter((l) => l.includes("rate limited"))
    console.log(lines.join("\n"))
    // 40 back-offs in 10 s: one line at 0 s, 5 s (with the held count)
    expect(lines.length).toBeGreaterThanOrEqual(2)
    expect(lines.length).toBeLessThanOrEqual(3)
    expect(lines[1]).toMatch(/the 21st time.*\(19 more since the last line\)/)
  })

  it("the percent, the rate and the ETA follow the rows done", () => {
    const c = Progress.make("r")
    Progress.update(c, { _tag: "RunStarted", runId: "r", pipeline: "p", mode: "batch", resumed: false, delivered: 0, dead: 0, openBatches: 0 })
    Progress.update(c, { _tag: "SourceSized", rows: 10_000, estimate: true })
    expect(Progress.total(c)).toEqual({ rows: 10_000, estimate: true })
    Progress.update(c, { _tag: "RowsRead", rows: 4_000, skipped: 0 })
    Progress.update(c, { _tag: "PartWritten", seq: 1, delivered: 2_400, dead: 100, refused: 0 })
    const [bar] = Display.status(c, { now: 10_000, startedAt: 0, rate: 250, width: 120, color: false, unicode: false })
    console.log(bar)
    expect(bar).toMatch(/^~ 25% \[#+=+-+\] 2,500\/~10,000 rows · 250 rows\/s · 0:10 elapsed · ETA ~0:30$/)
    // the source read to its end: the total is exact
    Progress.update(c, { _tag: "SourceEnded", rows: 9_000 })
    expect(Progress.total(c)).toEqual({ rows: 4_000, estimate: false })
    // a source sized in bytes: rows read scaled by what is left to read
    const b = Progress.make("b")
    Progress.update(b, { _tag: "SourceSized", bytes: 1_000_000 })
    Progress.update(b, { _tag: "RowsRead", rows: 500, skipped: 0, bytes: 250_000 })
    expect(Progress.total(b)).toEqual({ rows: 2_000, estimate: true })
  })

  it("a resume counts the rows earlier attempts read: read and the percent are the run's, not this process's", () => {
    // 15,000 rows admitted and delivered before; the resume reads on after the checkpoint
    const c = Progress.make("r")
    Progress.update(c, { _tag: "RunStarted", runId: "r", pipeline: "p", mode: "batch", resumed: true, delivered: 15_000, dead: 0, openBatches: 0, admitted: 15_000 })
    Progress.update(c, { _tag: "RowsRead", rows: 2_000, skipped: 0 })
    Progress.update(c, { _tag: "SourceEnded", rows: 17_000 })
    Progress.update(c, { _tag: "PartWritten", seq: 9, delivered: 2_000, dead: 0, refused: 0 })
    expect(Progress.format(c)).toMatch(/^read 17,000 · .*succeeded 17,000 · failed 0 · 100% of 17,000 rows$/)
    // a resume of a source without a checkpoint reads from the start and skips what was admitted
    const d = Progress.make("d")
    Progress.update(d, { _tag: "RunStarted", runId: "d", pipeline: "p", mode: "batch", resumed: true, delivered: 3_000, dead: 0, openBatches: 0, admitted: 3_000 })
    Progress.update(d, { _tag: "RowsRead", rows: 5_000, skipped: 3_000 })
    expect(Progress.format(d)).toMatch(/^read 5,000 · resumed past 3,000 · /)
  })
})

describe("a run's rows line", () => {
  it("adds up: failures not in the dead letter yet count as failed, not pending, and say so; nouns in their number", () => {
    // a run that failed before it delivered anything: 2 rows refused at admission, 150 never answered
    expect(Summary.rowsLine({ rows: 152, succeeded: 0, dead: 0, pending: 152, failedByKind: [{ kind: "invalid_input", rows: 2 }] }))
      .toBe("152 · succeeded 0 · failed 2 (invalid_input 2; 2 not in the dead letter yet) · pending 150")
    expect(Summary.rowsLine({ rows: 152, succeeded: 150, dead: 2, pending: 0, failedByKind: [{ kind: "invalid_input", rows: 2 }] }))
      .toBe("152 · succeeded 150 · failed 2 (invalid_input 2)")
    expect(Summary.rowsLine({ rows: 10, succeeded: 10, dead: 0, pending: 0, failedByKind: [] }, "delivered"))
      .toBe("10 · delivered 10 · failed 0")
    expect([Display.count(1, "batch", "batches"), Display.count(2, "batch", "batches"), Display.count(1_000, "row")])
      .toEqual(["1 batch", "2 batches", "1,000 rows"])
  })
})
