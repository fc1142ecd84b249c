-- template.lua -- sfa's template engine: CUDA C++ text with Lua holes.
--
-- Syntax of a template (templates/*.lt):
--   {{ expr }}   the value of a Lua expression (nil is an error)
--   {% code %}   Lua statements. A line that holds only such a tag (and blanks)
--                emits nothing, not even its newline.
--   {# note #}   a comment, dropped (same line rule as {% %})
-- A tag opens only when a blank (space, tab or newline) follows its two
-- characters, so CUDA text such as asm("{%0, %1}") or {{0}} stays literal.
--
-- A template compiles to one Lua chunk whose line numbers are the template's,
-- so every error names the template file and line. All templates of one
-- render share one environment: a function defined in a {% %} block, with
-- template text in its body, emits that text wherever it is called, from any
-- template. Templates see only the names in SAFE below (assert, error, pairs,
-- pcall, tostring, ..., copies of the string, table and math libraries: no io,
-- os, package, debug, load, require) plus:
--   include(name)   render another template here
--   import(name)    run another template for its definitions, dropping its text
--   emit(s)         append raw text
--   capture(f, ...) call f and return what it emitted instead of emitting it
-- The output may not hold a NUL byte (it becomes a C string) nor grow past
-- max_output bytes; either is an error at the line that emits it.
--
-- The C generator (gen/generator.c) runs this engine in a sandboxed Lua state:
-- only base, string, table and math exist there, with bounded work, heap and
-- a text-only load, and the loader takes plain file names only.
--
-- Usage from Lua (the C generator does the same):
--   local T = dofile("gen/template.lua")
--   local eng = T.new(function(name) return io.open("templates/"..name):read("a") end)
--   local src = eng:render("kernel.lt", { spec = {...} })

-- Captured before anything else runs: the engine's own load (templates never
-- see it) and the library functions it relies on.
local load, error, setmetatable, tostring, type = load, error, setmetatable, tostring, type
local pairs, ipairs = pairs, ipairs
local concat, find, format = table.concat, string.find, string.format

local M = {}

-- The globals templates see; the libraries are copied per render.
local SAFE = { "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "rawequal",
  "rawget", "rawlen", "rawset", "select", "setmetatable", "tonumber", "tostring", "type",
  "xpcall", "_VERSION" }
local SAFE_LIBS = { "string", "table", "math" }
local G = _G

local function safe_globals()
  local t = {}
  for _, k in ipairs(SAFE) do t[k] = G[k] end
  for _, k in ipairs(SAFE_LIBS) do
    local lib = {}
    for f, v in pairs(G[k]) do if f ~= "dump" then lib[f] = v end end
    t[k] = lib
  end
  return t
end

local OPEN = { ["{{"] = "}}", ["{%"] = "%}", ["{#"] = "#}" }

-- Translate template text into Lua source with the same number of lines.
function M.translate(text, name)
  local out, pos, n = {}, 1, #text
  local z = find(text, "\0", 1, true)
  if z then
    local line = select(2, text:sub(1, z):gsub("\n", "")) + 1
    error(format("%s:%d: the template holds a NUL byte", name, line), 0)
  end
  local function add_text(s)
    if #s > 0 then
      -- %q writes each newline as backslash-newline, which keeps lines aligned.
      out[#out + 1] = "_emit(" .. string.format("%q", s) .. ")"
    end
  end
  while pos <= n do
    local s = text:find("{[{%%#]%s", pos)
    if not s then add_text(text:sub(pos)); break end
    local open = text:sub(s, s + 1)
    local close = OPEN[open]
    local e = text:find(close, s + 2, true)
    if not e then
      local line = select(2, text:sub(1, s):gsub("\n", "")) + 1
      error(string.format("%s:%d: unclosed '%s'", name, line, open), 0)
    end
    local body = text:sub(s + 2, e - 1)
    local before = text:sub(pos, s - 1)
    local after = e + 2
    if open ~= "{{" then
      -- A statement or comment alone on its line swallows the line.
      local ls = s
      while ls > 1 and text:sub(ls - 1, ls - 1) ~= "\n" do ls = ls - 1 end
      -- rest: the blanks after the tag and the newline that ends its line
      -- (or the blanks up to the end of the text); nil if anything else follows.
      local rest
      local nb = text:find("[^ \t]", after)
      if not nb then
        rest = text:sub(after)
      elseif text:sub(nb, nb) == "\n" then
        rest = text:sub(after, nb)
      elseif text:sub(nb, nb + 1) == "\r\n" then
        rest = text:sub(after, nb + 1)
      end
      if ls >= pos and not text:sub(ls, s - 1):find("[^ \t]") and rest then
        add_text(text:sub(pos, ls - 1))
        if open == "{%" then out[#out + 1] = body end
        if open == "{#" then out[#out + 1] = (body:gsub("[^\n]", "")) end
        if rest:find("\n") then out[#out + 1] = "\n" end
        pos = after + #rest
        goto continue
      end
    end
    add_text(before)
    if open == "{{" then
      out[#out + 1] = "_emit(_val((" .. body .. "), " .. string.format("%q", body) .. "))"
    elseif open == "{%" then
      out[#out + 1] = body
    else
      out[#out + 1] = (body:gsub("[^\n]", ""))
    end
    pos = after
    ::continue::
  end
  return table.concat(out, " ")
end

local function val(v, expr)
  if v == nil then error("{{" .. expr .. "}} is nil", 2) end
  if v == true or v == false then return v and "true" or "false" end
  if math.type(v) == "float" and v == math.floor(v) and math.abs(v) < 2^53 then
    return string.format("%.1f", v)
  end
  return tostring(v)
end

-- new(loader, opts): loader(name) returns the template text, or nil and a
-- message (which becomes the error). opts.max_output: the most bytes of
-- output (default unlimited).
function M.new(loader, opts)
  local eng = { loader = loader, sources = {},
                max_output = opts and opts.max_output or math.huge }

  function eng:lua_source(name)
    local src = self.sources[name]
    if not src then
      local text, msg = self.loader(name)
      if not text then error(msg and tostring(msg) or ("template '" .. name .. "' not found"), 0) end
      src = M.translate(text, name)
      self.sources[name] = src
    end
    return src
  end

  -- render(name, vars): the rendered text, or raises "file:line: message".
  function eng:render(name, vars)
    local max = self.max_output
    local bufs = { { n = 0 } }      -- n: bytes in the buffer
    local safe = safe_globals()
    local env = setmetatable({}, { __metatable = false, __index = function(_, k)
      local v = vars[k]; if v ~= nil then return v end
      return safe[k]
    end })
    local chunks = {}               -- each template compiles once per render
    local function run(tname)
      local chunk = chunks[tname]
      if not chunk then
        local err
        chunk, err = load(self:lua_source(tname), "@" .. tname, "t", env)
        if not chunk then error(err, 0) end
        chunks[tname] = chunk
      end
      chunk()
    end
    -- Appends s; an error names the line `level` calls up from put's caller.
    local function put(s, level)
      local b = bufs[#bufs]
      if find(s, "\0", 1, true) then
        error("the output would hold a NUL byte (a C string ends there)", level + 1)
      end
      local n = b.n + #s
      if n > max then error(format("output larger than %d bytes", max), level + 1) end
      b.n = n
      b[#b + 1] = s
    end
    env._emit = function(s) put(s, 2) end
    env._val = val
    env.emit = function(s) put(tostring(s), 2) end
    env.include = function(tname) run(tname) end
    env.import = function(tname)
      bufs[#bufs + 1] = { n = 0 }
      run(tname)
      bufs[#bufs] = nil
    end
    env.capture = function(f, ...)
      bufs[#bufs + 1] = { n = 0 }
      f(...)
      local s = concat(bufs[#bufs])
      bufs[#bufs] = nil
      return s
    end
    run(name)
    return concat(bufs[1])
  end

  return eng
end

return M
