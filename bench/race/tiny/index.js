"use strict";

const server = require("./app")();

server.listen(Number(process.env.PORT || 3000));
