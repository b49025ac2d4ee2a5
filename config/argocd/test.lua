-- Tests of health.lua against the fixtures listed in health_test.yaml.
--
--   lua5.4 config/argocd/test.lua          (from any directory)
--
-- Prints one line per fixture and "N passed, N failed"; exits 1 when any failed.
--
-- health_test.yaml and testdata/*.yaml are JSON (which is YAML too), so a small JSON decoder
-- below is all the parsing needed; leading "#" comment lines are skipped. health.lua runs the
-- way Argo CD runs it: a global `obj`, only the base and table libraries (no string, math, io),
-- and the chunk's return value is the result.

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then
    error(err, 0)
  end
  local text = f:read("a")
  f:close()
  return text
end

-- ------------------------------------------------------------------ JSON
-- Objects and arrays become tables; null becomes nil (as Argo CD passes it to health checks).

local json = {}

function json.decode(text)
  local pos = 1

  local function fail(what)
    error(string.format("JSON: %s at byte %d", what, pos), 0)
  end

  local function skip()
    pos = text:find("[^ \t\r\n]", pos) or (#text + 1)
  end

  local value

  local escapes = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

  local function utf8_of(code)
    return utf8.char(code)
  end

  local function str()
    pos = pos + 1 -- opening quote
    local parts = {}
    while true do
      local c = text:sub(pos, pos)
      if c == "" then
        fail("unterminated string")
      elseif c == '"' then
        pos = pos + 1
        return table.concat(parts)
      elseif c == "\\" then
        local e = text:sub(pos + 1, pos + 1)
        if e == "u" then
          local hex = text:sub(pos + 2, pos + 5)
          if not hex:match("^%x%x%x%x$") then
            fail("bad \\u escape")
          end
          local code = tonumber(hex, 16)
          pos = pos + 6
          if code >= 0xD800 and code <= 0xDBFF and text:sub(pos, pos + 1) == "\\u" then
            local low = tonumber(text:sub(pos + 2, pos + 5), 16)
            if low and low >= 0xDC00 and low <= 0xDFFF then
              code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
              pos = pos + 6
            end
          end
          parts[#parts + 1] = utf8_of(code)
        elseif escapes[e] then
          parts[#parts + 1] = escapes[e]
          pos = pos + 2
        else
          fail("bad escape")
        end
      else
        local stop = text:find('["\\]', pos) or (#text + 1)
        parts[#parts + 1] = text:sub(pos, stop - 1)
        pos = stop
      end
    end
  end

  local function number()
    local s, e = text:find("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if not s then
      fail("bad number")
    end
    local n = tonumber(text:sub(s, e))
    if n == nil then
      fail("bad number")
    end
    pos = e + 1
    return n
  end

  local function literal(word, v)
    if text:sub(pos, pos + #word - 1) ~= word then
      fail("unexpected token")
    end
    pos = pos + #word
    return v
  end

  local function object()
    pos = pos + 1
    local out = {}
    skip()
    if text:sub(pos, pos) == "}" then
      pos = pos + 1
      return out
    end
    while true do
      skip()
      if text:sub(pos, pos) ~= '"' then
        fail("expected a key")
      end
      local k = str()
      skip()
      if text:sub(pos, pos) ~= ":" then
        fail("expected ':'")
      end
      pos = pos + 1
      out[k] = value()
      skip()
      local c = text:sub(pos, pos)
      pos = pos + 1
      if c == "}" then
        return out
      elseif c ~= "," then
        fail("expected ',' or '}'")
      end
    end
  end

  local function array()
    pos = pos + 1
    local out, n = {}, 0
    skip()
    if text:sub(pos, pos) == "]" then
      pos = pos + 1
      return out
    end
    while true do
      n = n + 1
      out[n] = value()
      skip()
      local c = text:sub(pos, pos)
      pos = pos + 1
      if c == "]" then
        return out
      elseif c ~= "," then
        fail("expected ',' or ']'")
      end
    end
  end

  value = function()
    skip()
    local c = text:sub(pos, pos)
    if c == "{" then
      return object()
    elseif c == "[" then
      return array()
    elseif c == '"' then
      return str()
    elseif c == "-" or c:match("%d") then
      return number()
    elseif c == "t" then
      return literal("true", true)
    elseif c == "f" then
      return literal("false", false)
    elseif c == "n" then
      return literal("null", nil)
    end
    fail("unexpected " .. (c == "" and "end of input" or string.format("%q", c)))
  end

  -- YAML comment lines before the JSON.
  while true do
    skip()
    if text:sub(pos, pos) ~= "#" then
      break
    end
    pos = (text:find("\n", pos, true) or #text) + 1
  end
  local result = value()
  skip()
  if pos <= #text then
    fail("trailing characters")
  end
  return result
end

-- ------------------------------------------------------------------ Argo CD's sandbox

local script_path = here .. "/health.lua"
local script = read(script_path)

-- What Argo CD opens without useOpenLibs: base and table (plus a "safe" os, which the check
-- does not use). No string, math or io.
local function sandbox(obj)
  return {
    obj = obj,
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, select = select, tonumber = tonumber, tostring = tostring, type = type,
    unpack = table.unpack,
    table = { concat = table.concat, insert = table.insert, remove = table.remove, sort = table.sort },
  }
end

local valid = { Healthy = true, Progressing = true, Degraded = true, Suspended = true, Missing = true, Unknown = true }

local function health_of(obj)
  local chunk, err = load(script, "=health.lua", "t", sandbox(obj))
  if not chunk then
    error("health.lua does not compile: " .. err, 0)
  end
  local ok, hs = pcall(chunk)
  if not ok then
    error("health.lua failed: " .. tostring(hs), 0)
  end
  if type(hs) ~= "table" then
    error("health.lua returned " .. type(hs) .. ", not a table", 0)
  end
  if not valid[hs.status] then
    error("health.lua returned an invalid status " .. tostring(hs.status), 0)
  end
  return hs
end

-- ------------------------------------------------------------------ run

local spec = json.decode(read(here .. "/health_test.yaml"))
local passed, failed = 0, 0
for _, t in ipairs(spec.tests or {}) do
  local want = t.healthStatus or {}
  local ok, result = pcall(function()
    return health_of(json.decode(read(here .. "/" .. t.inputPath)))
  end)
  local problem
  if not ok then
    problem = result
  elseif result.status ~= want.status then
    problem = string.format("status %s, want %s (message %q)", tostring(result.status), tostring(want.status),
      tostring(result.message))
  elseif want.message ~= nil and result.message ~= want.message then
    problem = string.format("message %q, want %q", tostring(result.message), want.message)
  end
  if problem then
    failed = failed + 1
    print(string.format("FAIL %-40s %s", t.inputPath, problem))
  else
    passed = passed + 1
    print(string.format("ok   %-40s %s: %s", t.inputPath, result.status, result.message or ""))
  end
end
if passed + failed == 0 then
  print("no tests found in health_test.yaml")
  failed = 1
end
print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
