#!/usr/bin/env node
// Verifies captured repeaterd requests with the Standard Webhooks reference library
// (npm "standardwebhooks"), so the signatures are checked by code that is not ours.
//
// Usage: node webhook_verify.js FILE
// FILE: a JSON array of {label?, id, timestamp, signature, body_b64, secret, content_type?}
// (id/timestamp/signature: the webhook-id, webhook-timestamp and webhook-signature headers as
// received; body_b64: the body bytes as received, base64; secret: "whsec_<base64>").
// Prints one line per request and exits 0 only when there was at least one and all verified.
"use strict";

const fs = require("fs");
const { Webhook } = require("standardwebhooks");

if (process.argv.length !== 3) {
  console.error("usage: node webhook_verify.js FILE");
  process.exit(2);
}

const captured = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
if (!Array.isArray(captured) || captured.length === 0) {
  console.error("no captured requests to verify");
  process.exit(2);
}

let failures = 0;
captured.forEach((req, i) => {
  const label = req.label || `request ${i + 1}`;
  try {
    const body = Buffer.from(req.body_b64, "base64");
    const headers = {
      "webhook-id": req.id,
      "webhook-timestamp": req.timestamp,
      "webhook-signature": req.signature,
    };
    // The library JSON-parses a verified payload unless told not to; XML bodies are not JSON.
    const jsonParse = /json/i.test(req.content_type || "");
    new Webhook(req.secret).verify(body, headers, { jsonParse });
    console.log(`ok ${label}`);
  } catch (e) {
    failures += 1;
    console.log(`FAIL ${label}: ${e && e.name ? e.name + ": " : ""}${e && e.message ? e.message : e}`);
  }
});
process.exit(failures === 0 ? 0 : 1);
