// SPDX-License-Identifier: BSD-2-Clause
// Echo backend for t/differential.t, run as `echo-go PORT`: answers every
// request with a JSON object of what net/http made of it: r.URL.Query(),
// r.ParseForm (r.PostForm), encoding/json of the body, r.Header.Get,
// r.Cookies(), and path.Clean of r.URL.Path for the account of
// /cap/<acc>/...  A "credential" is any value holding "egwtok_", the mark
// of the suite's tokens.
package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path"
	"regexp"
	"strings"
)

const name = "integrated_account_id"

var token = regexp.MustCompile(`egwtok_[A-Za-z0-9_-]*`)

func scan(v interface{}, out *[]string) {
	switch t := v.(type) {
	case string:
		*out = append(*out, token.FindAllString(t, -1)...)
	case []string:
		for _, e := range t {
			scan(e, out)
		}
	case []interface{}:
		for _, e := range t {
			scan(e, out)
		}
	case map[string][]string:
		for k, e := range t {
			scan(k, out)
			scan(e, out)
		}
	case map[string]interface{}:
		for k, e := range t {
			scan(k, out)
			scan(e, out)
		}
	}
}

func opt(v string, ok bool) interface{} {
	if !ok {
		return nil
	}
	return v
}

func echo(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(raw))
	_ = r.ParseForm()

	var data interface{}
	if json.Unmarshal(raw, &data) != nil {
		data = nil
	}

	body := []interface{}{}
	if v, ok := r.PostForm[name]; ok {
		body = append(body, v)
	}
	if m, ok := data.(map[string]interface{}); ok {
		if v, ok := m[name]; ok {
			body = append(body, v)
		}
	}

	query := r.URL.Query()
	var qacc interface{}
	if v, ok := query[name]; ok {
		qacc = v
	}

	p := path.Clean(r.URL.Path)
	var pacc interface{}
	if parts := strings.Split(p, "/"); len(parts) > 2 && parts[0] == "" &&
		parts[1] == "cap" {
		pacc = parts[2]
	}

	cookies := map[string][]string{}
	for _, c := range r.Cookies() {
		cookies[c.Name] = append(cookies[c.Name], c.Value)
	}

	creds := []string{}
	scan(map[string][]string(r.Header), &creds)
	scan(map[string][]string(query), &creds)
	scan(map[string][]string(r.PostForm), &creds)
	scan(data, &creds)
	scan(cookies, &creds)

	_, eok := r.Header["X-Environment-Id"]
	_, aok := r.Header["X-Integrated-Account-Id"]

	out, _ := json.Marshal(map[string]interface{}{
		"backend":            "go",
		"method":             r.Method,
		"path":               p,
		"query_account":      qacc,
		"body_account":       body,
		"path_account":       pacc,
		"headers":            r.Header,
		"environment_header": opt(r.Header.Get("X-Environment-Id"), eok),
		"account_header":     opt(r.Header.Get("X-Integrated-Account-Id"), aok),
		"form_value":         r.FormValue(name),
		"cookies":            cookies,
		"query":              query,
		"form":               r.PostForm,
		"json":               data,
		"credentials":        creds,
	})

	w.Header().Set("Content-Type", "application/json")
	w.Write(out)
}

func main() {
	http.ListenAndServe("127.0.0.1:"+os.Args[1], http.HandlerFunc(echo))
}
