"use strict";

const http = require("http");

const greeting = "hello from the race";

function handler(req, res) {
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ message: greeting }));
}

module.exports = () => http.createServer(handler);
