<?php
// SPDX-License-Identifier: BSD-2-Clause
// Echo backend for t/differential.t, run as `php -S 127.0.0.1:PORT router.php`:
// answers every request with a JSON object of what PHP's own parsers made
// of it ($_GET, $_POST, php://input, $_SERVER HTTP_*, $_COOKIE) and what a
// Symfony-style router reads as the account of /cap/<acc>/... (the path
// rawurldecode'd, dot segments left as they are).
// A "credential" is any value holding "egwtok_", the mark of the suite's
// tokens.

$name = 'integrated_account_id';
$input = file_get_contents('php://input');

// frameworks read form bodies of PUT, PATCH and DELETE themselves
$form = $_POST;
$ctype = strtolower($_SERVER['CONTENT_TYPE'] ?? '');
if (!in_array($_SERVER['REQUEST_METHOD'], ['GET', 'HEAD', 'POST'], true)
    && strpos($ctype, 'application/x-www-form-urlencoded') === 0)
{
    parse_str($input, $form);
}

$json = json_decode($input, true);

$body = [];
if (is_array($form) && array_key_exists($name, $form)) {
    $body[] = $form[$name];
}
if (is_array($json) && array_key_exists($name, $json)) {
    $body[] = $json[$name];
}

$uri = $_SERVER['REQUEST_URI'];
$path = rawurldecode(explode('?', $uri, 2)[0]);
$path_account = null;
if (preg_match('#^/cap/([^/]+)/#', $path, $m)) {
    $path_account = $m[1];
}

$headers = [];
foreach ($_SERVER as $k => $v) {
    if (strncmp($k, 'HTTP_', 5) === 0) {
        $headers[$k] = $v;
    }
}

$credentials = [];
$scan = function ($v) use (&$scan, &$credentials) {
    if (is_array($v)) {
        foreach ($v as $k => $e) {
            $scan((string) $k);
            $scan($e);
        }
    } elseif (is_string($v) && preg_match_all('/egwtok_[A-Za-z0-9_-]*/', $v, $m)) {
        foreach ($m[0] as $t) {
            $credentials[] = $t;
        }
    }
};
$scan($headers);
$scan($_GET);
$scan($form);
$scan($json);
$scan($_COOKIE);

header('Content-Type: application/json');
echo json_encode([
    'backend' => 'php',
    'method' => $_SERVER['REQUEST_METHOD'],
    'path' => $path,
    'query_account' => $_GET[$name] ?? null,
    'body_account' => $body,
    'path_account' => $path_account,
    'headers' => (object) $headers,
    'environment_header' => $_SERVER['HTTP_X_ENVIRONMENT_ID'] ?? null,
    'account_header' => $_SERVER['HTTP_X_INTEGRATED_ACCOUNT_ID'] ?? null,
    'cookies' => (object) $_COOKIE,
    'query' => (object) $_GET,
    'form' => is_array($form) ? (object) $form : $form,
    'json' => $json,
    'credentials' => $credentials,
], JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE), "\n";
