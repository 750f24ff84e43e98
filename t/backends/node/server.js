// SPDX-License-Identifier: BSD-2-Clause
'use strict';
// Echo backend for t/differential.t, run as `node server.js PORT`: answers
// every request with a JSON object of what Express 4 made of it: req.query
// (qs), req.body (express.json, express.urlencoded extended), req.params of
// the route /cap/:acc/*, req.headers, cookies parsed from the header.
// A "credential" is any value holding "egwtok_", the mark of the suite's
// tokens.  A body the parsers refuse gets Express's refusal (not a 200).

const express = require('express');
const cookie = require('cookie');

const NAME = 'integrated_account_id';
const port = Number(process.argv[2]);
const app = express();

app.use(express.json());
app.use(express.urlencoded({ extended: true }));

function scan(v, out) {
    if (typeof v === 'string') {
        const m = v.match(/egwtok_[A-Za-z0-9_-]*/g);
        if (m) out.push(...m);
    } else if (Array.isArray(v)) {
        v.forEach((e) => scan(e, out));
    } else if (v && typeof v === 'object') {
        for (const k of Object.keys(v)) {
            scan(k, out);
            scan(v[k], out);
        }
    }
}

function echo(req, res) {
    const cookies = req.headers.cookie ? cookie.parse(req.headers.cookie) : {};
    const body = [];
    if (req.body && typeof req.body === 'object'
        && Object.prototype.hasOwnProperty.call(req.body, NAME)) {
        body.push(req.body[NAME]);
    }
    const credentials = [];
    [req.headers, req.query, req.body, cookies].forEach((v) => scan(v, credentials));
    res.json({
        backend: 'node',
        method: req.method,
        path: req.path,
        query_account: req.query[NAME] === undefined ? null : req.query[NAME],
        body_account: body,
        path_account: req.params && req.params.acc !== undefined
            ? req.params.acc : null,
        headers: req.headers,
        environment_header: req.get('x-environment-id') === undefined
            ? null : req.get('x-environment-id'),
        account_header: req.get('x-integrated-account-id') === undefined
            ? null : req.get('x-integrated-account-id'),
        cookies: cookies,
        query: req.query,
        body: req.body === undefined ? null : req.body,
        credentials: credentials,
    });
}

app.all('/cap/:acc/*', echo);
app.all('*', echo);

app.use((err, req, res, next) => {
    res.status(err.status || 500).json({ backend: 'node',
                                         refused: String(err.type || err) });
});

app.listen(port, '127.0.0.1');
