#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
# Echo backend for t/differential.t, run as `python3 server.py PORT`:
# answers every request, whatever its verb, with a JSON object of what the
# standard library made of it: urllib.parse.parse_qs of the query and of a
# form body, json of a body, posixpath.normpath of the unquoted path (as
# SimpleHTTPRequestHandler does), the headers as http.server reads them,
# http.cookies for cookies.  A "credential" is any value holding "egwtok_",
# the mark of the suite's tokens.

import json
import posixpath
import re
import sys
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

NAME = 'integrated_account_id'
TOKEN = re.compile(r'egwtok_[A-Za-z0-9_-]*')


def scan(v, out):
    if isinstance(v, str):
        out.extend(TOKEN.findall(v))
    elif isinstance(v, list):
        for e in v:
            scan(e, out)
    elif isinstance(v, dict):
        for k, e in v.items():
            scan(k, out)
            scan(e, out)


class Echo(BaseHTTPRequestHandler):

    def __getattr__(self, name):
        # do_GET, do_MERGE, ...: every verb is answered the same way
        if name.startswith('do_'):
            return self.echo
        raise AttributeError(name)

    def log_message(self, fmt, *args):
        pass

    def echo(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)

        n = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(n) if n > 0 else b''
        text = raw.decode('utf-8', 'replace')
        ctype = (self.headers.get('Content-Type') or '').lower()

        form = {}
        if ctype.startswith('application/x-www-form-urlencoded'):
            form = parse_qs(text, keep_blank_values=True)
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None

        body = []
        if NAME in form:
            body.append(form[NAME])
        if isinstance(data, dict) and NAME in data:
            body.append(data[NAME])

        path = posixpath.normpath(unquote(url.path))
        parts = path.split('/')
        path_account = None
        if len(parts) > 2 and parts[0] == '' and parts[1] == 'cap':
            path_account = parts[2]

        headers = {}
        for k, v in self.headers.items():
            headers.setdefault(k, []).append(v)

        cookies = {}
        for h in self.headers.get_all('Cookie') or []:
            c = SimpleCookie()
            try:
                c.load(h)
            except Exception:
                continue
            for k, m in c.items():
                cookies[k] = m.value

        credentials = []
        for v in (headers, query, form, data, cookies):
            scan(v, credentials)

        out = json.dumps({
            'backend': 'python',
            'method': self.command,
            'path': path,
            'query_account': query.get(NAME),
            'body_account': body,
            'path_account': path_account,
            'headers': headers,
            'environment_header': self.headers.get('X-Environment-Id'),
            'account_header': self.headers.get('X-Integrated-Account-Id'),
            'cookies': cookies,
            'query': query,
            'form': form,
            'json': data,
            'credentials': credentials,
        }).encode()

        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)


HTTPServer(('127.0.0.1', int(sys.argv[1])), Echo).serve_forever()
