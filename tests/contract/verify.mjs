// Verifies tierwatch's signing test vectors without any tierwatch code: what a router in
// JavaScript/TypeScript does with a control message. Usage: node verify.mjs VECTORS.json
// Exit status 0 when every vector's canonical form and signature match, 1 otherwise.
import { createHmac, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";

// RFC 8785 (JCS): ECMAScript already writes numbers and escapes strings as JCS requires,
// and sorts strings by UTF-16 code units; only the object key order needs doing.
export const canonical = (v) =>
  v === null || typeof v !== "object" ? JSON.stringify(v)
  : Array.isArray(v) ? `[${v.map(canonical).join(",")}]`
  : `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;

export function verify(message, keyHex) {
  const { signature, ...body } = JSON.parse(message);
  const text = canonical(body);
  const mac = createHmac("sha256", Buffer.from(keyHex, "hex")).update(text, "utf8").digest();
  const ok = /^[0-9a-f]{64}$/.test(signature ?? "") &&
    timingSafeEqual(mac, Buffer.from(signature, "hex"));
  return { ok, text };
}

const doc = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const v of doc.vectors) {
  const { ok, text } = verify(v.message, v.key_hex);
  const same = text === v.canonical;
  if (!ok || !same) failed++;
  console.log(`${ok && same ? "ok  " : "FAIL"} ${v.name}` +
    (same ? "" : `\n  canonical: ${text}\n  expected:  ${v.canonical}`) +
    (ok ? "" : "\n  signature does not verify"));
}
console.log(`${doc.vectors.length - failed}/${doc.vectors.length} vectors verify`);
process.exit(failed ? 1 : 0);
