"use strict";

const express = require("express");

const app = express();
app.use(express.json());

const greeting = "hello from the race";

app.get("/", (req, res) => {
  res.json({ message: greeting });
});

app.get("/health", (req, res) => {
  res.json({ ok: true });
});

app.post("/echo", (req, res) => {
  res.status(201).json(req.body);
});

module.exports = app;
