#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
# Writes the seed corpus of fuzz_access (fuzz/corpus/access/): requests that
# pass (a development token, its account, a route to a method with {id} and
# {name} placeholders, and the other ways to name a token or an account)
# and one or more requests for each refusal, with long and odd values.
#
#   fuzz/access_seeds.py [DIR]      (default: fuzz/corpus/access)
#
# The input format is described in fuzz/README.md; the defaults it starts
# from are those of fuzz/fuzz_access.c (fuzz_default_s, fuzz_default_rec).

import os
import struct
import sys


def field(tag, data):
    if isinstance(data, str):
        data = data.encode()
    return tag.encode() + struct.pack('<H', len(data)) + data


def ref(i):
    """string i of the table, as it is"""
    return b'\x01' + bytes([0x30 + i])


def jref(i):
    """string i of the table, inside a JSON string"""
    return b'\x02' + bytes([0x30 + i])


def rep(n, i):
    """string i of the table, n times (\\x04 in it: the repetition's number)"""
    return b'\x03' + bytes([n >> 8, n & 0xff, 0x30 + i])


def S(i, data):
    if isinstance(data, str):
        data = data.encode()
    return field('S', bytes([i]) + data)


def H(name, value):
    if isinstance(name, str):
        name = name.encode()
    if isinstance(value, str):
        value = value.encode()
    return field('H', bytes([len(name)]) + name + value)


def rec(tag, mode, json=b''):
    if isinstance(json, str):
        json = json.encode()
    return field(tag, bytes([mode]) + json)


FOUND, NOT_FOUND, UNAVAILABLE, MALFORMED = range(4)

# configuration byte 2
BODY_FIELD, ROUTE, ROUTE_REST, HIDE, IDENTITY, REQUIRED, TENANT, \
    INTEGRATION = (1 << i for i in range(8))
ROUTED = ROUTE | ROUTE_REST | HIDE | IDENTITY


def C(token=0, account=1, flags=ROUTED, b3=0, deferred=0x1f,
      second=None):
    """the location; second=(token, account, flags): an internal redirect
    takes the request, once allowed, to a second location"""
    cfg = [token, account, flags, b3, deferred]
    if second:
        cfg += list(second) + [1]
    return field('C', bytes(cfg))


AUTH = H('Host', 'gw.example') + H('Authorization', b'Bearer ' + ref(0))
TOKEN = (b'{"token_id":"' + jref(9) + b'","team_id":"' + jref(8)
         + b'","environment_id":"' + jref(1) + b'","environment":"'
         + jref(10) + b'"')
ACCOUNT = (b'{"integrated_account_id":"' + jref(2) + b'","environment_id":"'
           + jref(1) + b'","integration":"' + jref(3) + b'","tenant_id":"'
           + jref(11) + b'"')
ENV = (b'{"environment_id":"' + jref(1) + b'","team_id":"' + jref(8)
       + b'","name":"' + jref(10) + b'"}')
ACC_Q = b'integrated_account_id=' + ref(2)


def uri(path, query=b''):
    if isinstance(path, str):
        path = path.encode()
    if isinstance(query, str):
        query = query.encode()
    return field('U', path + (b'?' + query if query else b''))


def integration(methods):
    """methods: list of (name, verb, path) of resource S4"""
    body = b','.join(b'"' + n + b'":{"method":"' + v + b'","path":"' + p
                     + b'"}' for n, v, p in methods)
    return (b'{"upstream":"' + jref(6) + b'","resources":{"' + jref(4)
            + b'":{' + body + b'}}}')


STD = [(b'get', jref(13), jref(7)),
       (jref(14), b'POST', b'/crm/v3/objects/' + jref(4) + b'/' + jref(14)),
       (b'list', b'GET', b'/crm/v3/objects/' + jref(4))]

seeds = {
    # --- passing requests ------------------------------------------------
    'allow_get': C(),
    'allow_get_immediate': C(deferred=0),
    'allow_get_reverse': C(b3=0x04),
    'allow_list': field('Z', b'') + uri(b'/proxy/' + ref(4), ACC_Q)
                  + field('M', 'GET'),
    'allow_custom_post': field('M', 'POST') + field('Z', ref(14))
                         + uri(b'/proxy/contacts/merge', ACC_Q),
    'allow_no_route_header_account':
        C(account=2, flags=HIDE | IDENTITY) + uri('/api/things', 'q=1')
        + AUTH + H('X-Integrated-Account', ref(2)),
    'allow_capture_account':
        C(account=3) + uri(b'/proxy/contacts/42', b'name=' + ref(15)),
    'allow_admin_other_env':
        rec('T', FOUND, TOKEN + b',"kind":"admin"}')
        + S(1, 'env_stg') + S(10, 'staging')
        + rec('E', FOUND, ENV)
        + AUTH + H('X-Environment-Id', 'env_stg'),
    'allow_account_token':
        rec('T', FOUND, TOKEN + b',"kind":"account","integrated_account_id":"'
            + jref(2) + b'"}')
        + uri(b'/proxy/' + ref(4) + b'/42', b'name=x'),
    'allow_tenant':
        C(account=0, flags=ROUTED | TENANT | INTEGRATION)
        + uri(b'/proxy/contacts/42', b'name=x'),
    'allow_json_body':
        C(flags=ROUTED | BODY_FIELD, b3=0x10) + field('M', 'POST')
        + field('Z', ref(14)) + uri('/proxy/contacts/merge', 'x=1')
        + AUTH + H('Content-Type', 'application/json')
        + field('B', b'{"integrated_account_id":"' + jref(2)
                + b'","x":[1,2,{"y":null}]}'),
    'allow_form_body':
        C(b3=0x20) + field('M', 'POST') + field('Z', ref(14))
        + uri('/proxy/contacts/merge', 'x=') + AUTH
        + H('Content-Type', 'application/x-www-form-urlencoded; charset=x')
        + field('B', b'a=1&integrated_account_id=' + ref(2) + b'&b=%41'),
    'allow_cookie_token':
        C(token=3) + uri(b'/proxy/contacts/42', ACC_Q + b'&name=x')
        + H('Cookie', b'a=b; session=' + ref(0) + b'; c=d'),
    'allow_arg_token':
        C(token=2) + H('Host', 'h')
        + uri(b'/proxy/contacts/42',
              b'api_key=' + ref(0) + b'&' + ACC_Q + b'&name=x&keep=1'),
    'allow_http_token':
        C(token=1) + field('K', 'x_api_key')
        + uri(b'/proxy/contacts/42', ACC_Q + b'&name=x')
        + H('X-Api-Key', ref(0)) + H('X_Team_Id', 'spoofed'),
    'allow_other_token_value':
        C(token=4) + uri(b'/proxy/contacts/42', ACC_Q + b'&name=x')
        + H('Host', 'h'),
    'allow_identity_spoofed':
        AUTH + H('X-Environment-Id', ref(1)) + H('x-team-id', 'team_evil')
        + H('X_Token_Id', 'forged') + H('X-Tenant-Id', 'forged'),
    'allow_encoded_values':
        S(5, 'a b') + S(15, '%C3%A9+%7e')
        + uri(b'/proxy/contacts/42', ACC_Q + b'&name=' + ref(15)),
    'allow_utf8_values':
        S(4, 'c\u00f6ntacts') + S(3, 'hub\u00a7spot')
        + S(5, '\u00e9\u00e9') + S(15, '\u2603'),
    'allow_many_methods':
        S(15, b'"m\x04":{"method":"GET","path":"/m/\x04/{id}"},')
        + rec('I', FOUND, b'{"upstream":"' + jref(6)
              + b'","resources":{"' + jref(4) + b'":{' + rep(1000, 15)
              + b'"get":{"method":"GET","path":"/g/{id}"}}}}')
        + uri(b'/proxy/contacts/42', ACC_Q),
    'allow_no_hide':
        C(flags=ROUTE | ROUTE_REST | IDENTITY),
    'allow_no_identity':
        C(flags=ROUTE | ROUTE_REST | HIDE) + AUTH
        + H('X-Environment-Id', ref(1)),

    'redirect_allow':
        C(second=(0, 1, HIDE | IDENTITY)),
    'redirect_routed_again':
        C(deferred=0x03, second=(0, 1, ROUTED))
        + uri(b'/proxy/contacts/42', ACC_Q + b'&name=x'),
    'redirect_refused_there':
        C(flags=HIDE | IDENTITY, second=(0, 1, ROUTE | HIDE | IDENTITY))
        + field('Z', b'')
        + rec('I', NOT_FOUND),

    # --- refusals --------------------------------------------------------
    'missing_token': H('Host', 'h'),
    'missing_token_basic': H('Authorization', 'Basic dXNlcjpwYXNz'),
    'invalid_token_unknown': rec('T', NOT_FOUND),
    'invalid_token_syntax': H('Authorization', 'Bearer not a token!'),
    'invalid_token_revoked': rec('T', FOUND, TOKEN + b',"revoked":true}'),
    'invalid_token_expired': rec('T', FOUND, TOKEN + b',"expires_at":1}'),
    'token_far_expiry':
        rec('T', FOUND, TOKEN + b',"expires_at":4.1e18}'),
    'token_huge_integer':
        rec('T', FOUND, TOKEN + b',"expires_at":99999999999999999999999}'),
    'env_mismatch': AUTH + H('X-Environment-Id', 'env_prod'),
    'env_mismatch_admin_other_team':
        rec('T', FOUND, TOKEN + b',"kind":"admin"}')
        + rec('E', FOUND, b'{"environment_id":"env_x","team_id":"team_2"}')
        + uri(b'/proxy/contacts/42',
              ACC_Q + b'&environment_id=env_x&name=x'),
    'account_other_env':
        rec('A', FOUND, b'{"integrated_account_id":"' + jref(2)
            + b'","environment_id":"env_prod","integration":"hubspot"}'),
    'account_disabled':
        rec('A', FOUND, ACCOUNT + b',"status":"disabled"}'),
    'account_unknown': rec('A', NOT_FOUND),
    'account_non_ascii':
        uri(b'/proxy/contacts/42',
            b'integrated_account_id=acc\xc3\xa9&name=x'),
    'missing_account': uri('/proxy/contacts/42', 'name=x'),
    'method_not_found':
        field('M', 'POST') + field('Z', 'nope') + uri('/proxy/contacts/nope',
                                                      ACC_Q),
    'method_not_found_verb': field('M', 'PURGE'),
    'method_not_allowed':
        field('M', 'GET') + field('Z', ref(14))
        + uri(b'/proxy/contacts/merge', ACC_Q),
    'integration_not_installed': rec('I', NOT_FOUND),
    'unavailable_token': rec('T', UNAVAILABLE),
    'unavailable_account': rec('A', UNAVAILABLE),
    'misconfigured_token': rec('T', MALFORMED),
    'misconfigured_account_json': rec('A', FOUND, b'{"integrated_account_id":'),
    'misconfigured_integration_not_utf8':
        S(6, b'http://up\xff\xfe/'),
    'two_credentials':
        uri(b'/proxy/contacts/42',
            ACC_Q + b'&access_token=' + ref(0) + b'&name=x'),
    'credential_twice':
        AUTH + H('authorization', b'Bearer ' + ref(0)),
    'credential_alias_arg':
        uri(b'/proxy/contacts/42', ACC_Q + b'&Access%5Ftoken=x&name=x'),
    'path_dot_segment': uri(b'/proxy/%2e%2E/contacts', ACC_Q),
    'account_twice':
        uri(b'/proxy/contacts/42', ACC_Q + b'&' + ACC_Q + b'&name=x'),
    'placeholder_missing': uri(b'/proxy/contacts/42', ACC_Q),
    'placeholder_twice':
        uri(b'/proxy/contacts/42', ACC_Q + b'&name=a&name=b'),
    'placeholder_dot_value':
        uri(b'/proxy/contacts/42', ACC_Q + b'&name=..'),

    # --- the crash the per-parser fuzzers missed: long record values in a
    # --- route refusal message
    'long_placeholder_omitted':
        S(12, rep(4000, 13)) + S(13, 'p')
        + rec('I', FOUND, integration(
            [(b'get', b'GET', b'/a/{id}/{' + jref(12) + b'}')]))
        + uri(b'/proxy/contacts/42', ACC_Q) + field('M', 'GET'),
    'long_placeholder_given':
        S(12, rep(2000, 13)) + S(13, 'q')
        + rec('I', FOUND, integration(
            [(b'get', b'GET', b'/a/{id}/{' + jref(12) + b'}')]))
        + uri(b'/proxy/contacts/42',
              ACC_Q + b'&' + ref(12) + b'=v"\xc3\xa9') + field('M', 'GET'),
    'long_verb':
        S(13, rep(5000, 15)) + S(15, 'V')
        + rec('I', FOUND, integration(
            [(jref(14), jref(13), b'/merge/{id}')]))
        + field('M', 'POST') + field('Z', ref(14))
        + uri(b'/proxy/contacts/merge', ACC_Q),
    'long_request_verb':
        S(15, 'X') + field('M', rep(6000, 15) + b'"\x05\x01\x7f\xff'),
    'long_resource_not_found':
        S(4, rep(3000, 15)) + S(15, b'r\xc3\xa9"')
        + rec('I', FOUND, integration([(b'get', b'GET', b'/x')]))
        + field('R', b'other' + rep(100, 15))
        + uri(b'/proxy/x/42', ACC_Q),
    'long_environment_name':
        S(10, rep(3000, 15)) + S(15, b'\xe2\x98\x83\\n"')
        + rec('I', NOT_FOUND),
    'long_account_logged':
        S(2, rep(500, 15)) + S(15, b'a"b') + rec('A', NOT_FOUND),
}

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'corpus', 'access')
os.makedirs(out, exist_ok=True)

for name, data in seeds.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)

print(f'{len(seeds)} seeds in {out}')
