"use strict";

const assert = require("assert");
const request = require("supertest");
const app = require("../app");

describe("the app", () => {
  it("greets", async () => {
    const res = await request(app).get("/").expect(200);
    assert.match(res.body.message, /hello/);
  });

  it("says it is healthy", async () => {
    await request(app).get("/health").expect(200, { ok: true });
  });

  it("echoes what it is sent", async () => {
    await request(app).post("/echo").send({ a: 1 }).expect(201, { a: 1 });
  });
});
