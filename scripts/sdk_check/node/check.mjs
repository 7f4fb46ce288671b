// The official `openai` Node SDK (pinned in package.json) against a running
// tollgate, unchanged: a json_schema whose fields keep their order, an
// image request whose options reach the provider and whose b64_json comes
// back, a 402 and a daily-cap 429 that fail fast (no hours-long sleep).
// Prints one line per check and `N passed, N failed`.
import OpenAI from "openai";

const [base, key, broke, capped] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });
const checks = [];
const check = (name, fn) => checks.push([name, fn]);
const assert = (ok, what) => { if (!ok) throw new Error(what); };

check("chat json_schema keeps the schema's field order", async () => {
  const r = await client.chat.completions.create({
    model: "gpt",
    messages: [{ role: "user", content: "2+2?" }],
    response_format: { type: "json_schema", json_schema: { name: "r", strict: true, schema: {
      type: "object", properties: { reasoning: { type: "string" }, answer: { type: "string" } },
      required: ["reasoning", "answer"], additionalProperties: false } } },
  });
  const keys = Object.keys(JSON.parse(r.choices[0].message.content));
  assert(JSON.stringify(keys) === '["reasoning","answer"]', `fields came back as ${keys}`);
  assert(r.tollgate && r.tollgate.cost_micro > 0, "the tollgate cost object");
});

check("images.generate: options reach the provider, b64_json comes back", async () => {
  const r = await client.images.generate({ model: "image", prompt: "a fox", background: "transparent", output_format: "webp" });
  assert(r.data[0].b64_json === "aW1hZ2U=" && !r.data[0].url, `data[0]: ${JSON.stringify(r.data[0])}`);
  assert(r.background === "transparent" && r.output_format === "webp", `the provider saw ${r.background}/${r.output_format}`);
  assert(r.usage && r.usage.output_tokens === 4160, "usage comes back");
});

check("a 402 is an APIError with the code, at once", async () => {
  const poor = new OpenAI({ baseURL: `${base}/v1`, apiKey: broke }); // default retries
  const started = Date.now();
  try {
    await poor.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "hi" }] });
    throw new Error("a call without credits must fail");
  } catch (e) {
    assert(e instanceof OpenAI.APIError && e.status === 402, `got ${e}`);
    assert(e.code === "insufficient_credits", `code ${e.code}`);
  }
  assert(Date.now() - started < 5000, "402 is not retried");
});

check("a daily-cap 429 fails fast instead of sleeping until tomorrow", async () => {
  const c = new OpenAI({ baseURL: `${base}/v1`, apiKey: capped }); // default retries (2)
  const started = Date.now();
  try {
    await c.chat.completions.create({ model: "gpt", messages: [{ role: "user", content: "hi" }] });
    throw new Error("a call past the key's daily limit must fail");
  } catch (e) {
    assert(e instanceof OpenAI.RateLimitError && e.status === 429, `got ${e}`);
    assert(e.headers.get("retry-after") === null, "no Retry-After past 60 s");
  }
  const took = Date.now() - started;
  assert(took < 15000, `the SDK waited ${took} ms`);
});

let passed = 0, failed = 0;
for (const [name, fn] of checks) {
  try { await fn(); passed++; console.log(`ok   ${name}`); }
  catch (e) { failed++; console.log(`FAIL ${name}: ${e.message}`); }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
