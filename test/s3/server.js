// test/s3/server.js: a local S3 server for the tests, on 127.0.0.1 only.
//
//   node server.js DATA_DIR PORT      (test/s3/start runs it)
//   node server.js --selftest         (checks sigv4() against AWS's examples)
//
// Storage and the S3 API are s3rver's (S3RVER_MODULES names the
// node_modules it is installed in).  s3rver 3.7.1 does NOT check SigV4
// signatures (see README-notes.txt), so every request goes first through
// checkSigV4() below, which refuses, as S3 does:
//   - a request without an Authorization header (403 AccessDenied);
//     presigned URLs and V2 signatures are not supported here (403 / 400);
//   - an unknown access key (403 InvalidAccessKeyId);
//   - a credential scope whose region is not KLING_S3_REGION, whose service
//     is not s3, or whose date is not the x-amz-date's day (400);
//   - an x-amz-date more than 15 minutes off (403 RequestTimeTooSkewed);
//   - a missing x-amz-content-sha256 (400 InvalidRequest), host or any
//     x-amz-* header left out of SignedHeaders (403 AccessDenied);
//   - a wrong signature (403 SignatureDoesNotMatch, with the canonical
//     request it computed, for debugging);
//   - a body whose sha256 is not the x-amz-content-sha256 that was signed
//     (400 XAmzContentSHA256Mismatch); UNSIGNED-PAYLOAD is accepted, and
//     STREAMING-* (aws-chunked) is refused as not implemented (501).
// Environment: KLING_S3_BUCKET (kling), KLING_S3_REGION (us-east-1),
// KLING_S3_KEY and KLING_S3_SECRET (S3RVER and S3RVER).
'use strict';

const crypto = require('crypto');
const path = require('path');
const { Readable } = require('stream');

const BUCKET = process.env.KLING_S3_BUCKET || 'kling';
const REGION = process.env.KLING_S3_REGION || 'us-east-1';
const KEY = process.env.KLING_S3_KEY || 'S3RVER';
const SECRET = process.env.KLING_S3_SECRET || 'S3RVER';

const sha256 = data => crypto.createHash('sha256').update(data).digest('hex');
const hmac = (key, data) => crypto.createHmac('sha256', key).update(data).digest();
// RFC 3986: everything but A-Z a-z 0-9 - _ . ~ is percent-encoded.
const enc = s =>
  encodeURIComponent(s).replace(/[!'()*]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase());

// The SigV4 signature (hex) of a request, as
// https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
// describes it for S3 (the path is encoded once, not twice).
function sigv4({ method, url, headers, signedHeaders, payloadHash, amzDate, scope, secret }) {
  const [rawPath, rawQuery = ''] = url.split(/\?(.*)/s);
  const uri = rawPath.split('/').map(seg => enc(decodeURIComponent(seg))).join('/');
  const query = rawQuery
    .split('&')
    .filter(Boolean)
    .map(p => p.split(/=(.*)/s).slice(0, 2).map(x => enc(decodeURIComponent(x || ''))))
    .sort(([a, x], [b, y]) => (a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const canonHeaders = signedHeaders
    .map(h => `${h}:${String(headers[h] ?? '').trim().replace(/\s+/g, ' ')}\n`)
    .join('');
  const canonicalRequest = [method, uri, query, canonHeaders, signedHeaders.join(';'), payloadHash].join('\n');
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope.join('/'), sha256(canonicalRequest)].join('\n');
  let key = 'AWS4' + secret;
  for (const part of scope) key = hmac(key, part);
  return { signature: hmac(key, stringToSign).toString('hex'), canonicalRequest, stringToSign };
}

function selftest() {
  // The two header-signed examples of
  // https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html
  const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
  const scope = ['20130524', 'us-east-1', 's3', 'aws4_request'];
  const amzDate = '20130524T000000Z';
  const cases = [
    {
      name: 'GET Object',
      method: 'GET',
      url: '/test.txt',
      headers: {
        host: 'examplebucket.s3.amazonaws.com', range: 'bytes=0-9', 'x-amz-date': amzDate,
        'x-amz-content-sha256': sha256(''),
      },
      signedHeaders: ['host', 'range', 'x-amz-content-sha256', 'x-amz-date'],
      payloadHash: sha256(''),
      want: 'f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41',
    },
    {
      name: 'PUT Object',
      method: 'PUT',
      url: '/test$file.text',
      headers: {
        host: 'examplebucket.s3.amazonaws.com', date: 'Fri, 24 May 2013 00:00:00 GMT',
        'x-amz-date': amzDate, 'x-amz-storage-class': 'REDUCED_REDUNDANCY',
        'x-amz-content-sha256': sha256('Welcome to Amazon S3.'),
      },
      signedHeaders: ['date', 'host', 'x-amz-content-sha256', 'x-amz-date', 'x-amz-storage-class'],
      payloadHash: sha256('Welcome to Amazon S3.'),
      want: '98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd',
    },
  ];
  let failed = 0;
  for (const c of cases) {
    const got = sigv4({ ...c, amzDate, scope, secret }).signature;
    console.log(`${got === c.want ? 'ok' : 'not ok'} - ${c.name}: ${got}`);
    if (got !== c.want) failed++;
  }
  console.log(`${cases.length - failed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

function main(S3rver, S3Error, [directory, port]) {
  const fail = (code, message, detail = {}, status) => {
    const err = new S3Error(code, message, detail);
    if (status) err.status = status;
    err.expose = true;
    return err;
  };

  // One line a request on stdout (s3rver's own log is silenced: it is
  // colored and cuts the start of each line).
  async function accessLog(ctx, next) {
    const line = what => console.log(`${new Date().toISOString()} ${ctx.method} ${ctx.url} ${what}`);
    try {
      await next();
      line(ctx.status);
    } catch (err) {
      line(`${err.status || 500} ${err.code || err.message}`);
      throw err;
    }
  }

  async function checkSigV4(ctx, next) {
    const h = ctx.headers;
    const auth = h.authorization;
    if (!auth) {
      if ('X-Amz-Algorithm' in ctx.query || 'Signature' in ctx.query)
        throw fail('AccessDenied', 'Presigned URLs are not supported by this test server');
      throw fail('AccessDenied', 'Access Denied (anonymous requests are refused)');
    }
    const m = /^AWS4-HMAC-SHA256 +(.*)$/s.exec(auth);
    if (!m) throw fail('InvalidArgument', 'Only AWS4-HMAC-SHA256 (SigV4) is supported here');
    const parts = Object.fromEntries(m[1].split(',').map(p => p.trim().split(/=(.*)/s).slice(0, 2)));
    if (!parts.Credential || !parts.SignedHeaders || !parts.Signature)
      throw fail('AuthorizationHeaderMalformed', 'Credential, SignedHeaders and Signature are required');
    const [key, ...scope] = parts.Credential.split('/');
    if (key !== KEY)
      throw fail('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.',
                 { AWSAccessKeyId: key });
    const [day, region, service, term] = scope;
    if (scope.length !== 4 || region !== REGION || service !== 's3' || term !== 'aws4_request')
      throw fail('AuthorizationHeaderMalformed',
                 `The credential scope ${scope.join('/')} is wrong; expecting <date>/${REGION}/s3/aws4_request`,
                 { Region: REGION });
    const amzDate = h['x-amz-date'] || '';
    const t = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/.exec(amzDate);
    if (!t) throw fail('AccessDenied', 'AWS authentication requires a valid x-amz-date header');
    if (amzDate.slice(0, 8) !== day)
      throw fail('AuthorizationHeaderMalformed', 'Invalid credential date. Date is not the same as X-Amz-Date.');
    const skew = Math.abs(Date.UTC(t[1], t[2] - 1, t[3], t[4], t[5], t[6]) - Date.now());
    if (skew > 15 * 60 * 1000)
      throw fail('RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.',
                 { RequestTime: amzDate, ServerTime: new Date().toISOString() });
    const payloadHash = h['x-amz-content-sha256'];
    if (!payloadHash)
      throw fail('InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
    const signedHeaders = parts.SignedHeaders.split(';');
    const unsigned = Object.keys(h).filter(n => n.startsWith('x-amz-') && !signedHeaders.includes(n));
    if (!signedHeaders.includes('host') || unsigned.length)
      throw fail('AccessDenied', 'There were headers present in the request which were not signed',
                 { HeadersNotSigned: unsigned.join(', ') || 'host' });
    let s;
    try {
      s = sigv4({ method: ctx.method, url: ctx.req.url, headers: h, signedHeaders, payloadHash, amzDate,
                  scope, secret: SECRET });
    } catch (e) {
      throw fail('InvalidURI', 'Could not parse the URI: ' + e.message, {}, 400);
    }
    if (parts.Signature !== s.signature)
      throw fail('SignatureDoesNotMatch',
                 'The request signature we calculated does not match the signature you provided. ' +
                 'Check your key and signing method.',
                 { AWSAccessKeyId: key, StringToSign: s.stringToSign, CanonicalRequest: s.canonicalRequest });
    if (/^STREAMING-/.test(payloadHash))
      throw fail('NotImplemented', 'aws-chunked (STREAMING-*) payloads are not supported by this test server');
    if (payloadHash !== 'UNSIGNED-PAYLOAD') {
      if (!/^[0-9a-f]{64}$/.test(payloadHash))
        throw fail('InvalidArgument', 'x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a sha256 in lowercase hex');
      const chunks = [];
      for await (const chunk of ctx.req) chunks.push(chunk);
      const body = Buffer.concat(chunks);
      const got = sha256(body);
      if (got !== payloadHash)
        throw fail('XAmzContentSHA256Mismatch',
                   "The provided 'x-amz-content-sha256' header does not match what was computed.",
                   { ClientComputedContentSHA256: payloadHash, S3ComputedContentSHA256: got }, 400);
      // s3rver reads the body from ctx.req: hand it the bytes read here.
      const replay = Readable.from([body]);
      replay.headers = ctx.req.headers;
      ctx.req = replay;
    }
    return next();
  }

  const app = new S3rver({
    address: '127.0.0.1',
    port: Number(port),
    directory,
    silent: true,
    configureBuckets: [{ name: BUCKET }],
  });
  // s3rver's own check accepts any V4 signature of a known key: make the
  // key known to it, and run checkSigV4 before all of its middleware.
  require(path.join(process.env.S3RVER_MODULES, 's3rver/lib/models/account'))
    .DUMMY_ACCOUNT.createKeyPair(KEY, SECRET);
  app.middleware.unshift(accessLog, checkSigV4);
  app.run().then(
    addr => console.log(`s3 server listening on ${addr.address}:${addr.port}, bucket ${BUCKET}, region ${REGION}`),
    err => {
      console.error(err);
      process.exit(1);
    },
  );
}

if (require.main !== module) module.exports = { sigv4 };
else if (process.argv[2] === '--selftest') selftest();
else {
  if (process.argv.length !== 4 || !process.env.S3RVER_MODULES) {
    console.error('usage: S3RVER_MODULES=.../node_modules node server.js DATA_DIR PORT');
    process.exit(2);
  }
  const mods = process.env.S3RVER_MODULES;
  main(require(path.join(mods, 's3rver')), require(path.join(mods, 's3rver/lib/models/error')),
       process.argv.slice(2));
}
