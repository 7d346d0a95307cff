import { randomBytes, randomInt } from "node:crypto";
import { describe, expect, it } from "vitest";
import { FRAME, FrameReader, frame } from "../../src/ssh/warm-client.js";

// The framing on the guard daemon's control socket (src/ssh/warm-client.ts), cut wherever the socket's reads happen to fall.
describe("FrameReader", () => {
  it("gives back every frame whatever the reads' sizes: data frames as pieces in order, other frames whole", () => {
    const sent: [number, Buffer][] = [
      [FRAME.stdout, randomBytes(65_536)],
      [FRAME.status, Buffer.from("spuff: a status line")],
      [FRAME.stderr, randomBytes(3)],
      [FRAME.stdin, Buffer.alloc(0)],
      [FRAME.stdout, randomBytes(200_000)],
      [FRAME.eof, Buffer.alloc(0)],
      [FRAME.exit, Buffer.from(JSON.stringify({ code: 7 }))],
    ];
    const wire = Buffer.concat(sent.map(([t, p]) => frame(t, p)));
    for (const cut of [1, 2, 5, 6, 4096, 65_536, 65_541, wire.length, 0]) {
      const got: [number, Buffer[]][] = [];
      const r = new FrameReader((type, payload) => {
        const last = got.at(-1);
        // Pieces of one data frame, or of consecutive data frames of one kind: joined here as a reader of the stream would.
        if (last && last[0] === type && type !== FRAME.status && type !== FRAME.exit && type !== FRAME.eof) last[1].push(payload);
        else got.push([type, [payload]]);
      });
      for (let off = 0; off < wire.length; ) {
        const n = cut || randomInt(1, 70_000);
        r.push(wire.subarray(off, off + n));
        off += n;
      }
      // An empty data frame carries nothing; the others arrive as sent.
      expect(got.map(([t, p]) => [t, Buffer.concat(p).toString("hex")])).toEqual(sent.filter(([t, p]) => p.length || t === FRAME.eof).map(([t, p]) => [t, p.toString("hex")]));
    }
  });
});
