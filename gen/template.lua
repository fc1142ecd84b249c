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
-- template. Templates see the Lua standard functions plus:
--   include(name)   render another template here
--   import(name)    run another template for its definitions, dropping its text
--   emit(s)         append raw text
--   capture(f, ...) call f and return what it emitted instead of emitting it
--
-- Usage from Lua (the C generator does the same):
--   local T = dofile("gen/template.lua")
--   local eng = T.new(function(name) return io.open("templates/"..name):read("a") end)
--   local src = eng:render("kernel.lt", { spec = {...} })

local M = {}

local OPEN = { ["{{"] = "}}", ["{%"] = "%}", ["{#"] = "#}" }

-- Translate template text into Lua source with the same number of lines.
function M.translate(text, name)
  local out, pos, n = {}, 1, #text
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
      local rest = text:match("^[ \t]*\r?\n", after) or text:match("^[ \t]*$", after)
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

-- new(loader): loader(name) returns the template text, or nil and a message.
function M.new(loader)
  local eng = { loader = loader, sources = {} }

  function eng:lua_source(name)
    local src = self.sources[name]
    if not src then
      local text, msg = self.loader(name)
      if not text then error("template '" .. name .. "' not found: " .. tostring(msg), 0) end
      src = M.translate(text, name)
      self.sources[name] = src
    end
    return src
  end

  -- render(name, vars): the rendered text, or raises "file:line: message".
  function eng:render(name, vars)
    local bufs = { {} }
    local env = setmetatable({}, { __index = function(_, k)
      local v = vars[k]; if v ~= nil then return v end
      return _G[k]
    end })
    local function run(tname)
      local chunk, err = load(self:lua_source(tname), "@" .. tname, "t", env)
      if not chunk then error(err, 0) end
      chunk()
    end
    env._emit = function(s) local b = bufs[#bufs]; b[#b + 1] = s end
    env._val = val
    env.emit = function(s) env._emit(tostring(s)) end
    env.include = function(tname) run(tname) end
    env.import = function(tname)
      bufs[#bufs + 1] = {}
      run(tname)
      bufs[#bufs] = nil
    end
    env.capture = function(f, ...)
      bufs[#bufs + 1] = {}
      f(...)
      local s = table.concat(bufs[#bufs])
      bufs[#bufs] = nil
      return s
    end
    run(name)
    return table.concat(bufs[1])
  end

  return eng
end

return M
