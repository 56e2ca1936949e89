"use strict";

const assert = require("node:assert");
const test = require("node:test");
const server = require("../app");

test("greets", async () => {
  const app = server().listen(0);
  const { port } = app.address();
  const body = await fetch(`http://127.0.0.1:${port}/`).then((r) => r.json());
  app.close();
  assert.match(body.message, /hello/);
});
