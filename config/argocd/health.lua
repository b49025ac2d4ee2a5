-- Argo CD health check for ghost.dev/SchemaMigration.
--
--   Succeeded             -> Healthy
--   Failed, Cancelled     -> Degraded (finished without the change; a human decides what next)
--   Postponed             -> Suspended (copied and in sync; waits for a human to release the
--                            cut-over: ghost/postpone-cut-over=false or spec.cutOver.postpone)
--   anything else         -> Progressing (Queued, Pending, Validating, Copying, Verifying,
--                            CuttingOver)
--   no status yet, or status.observedGeneration < metadata.generation
--                         -> Progressing, "waiting for the controller" (the status describes an
--                            older spec, or none at all)
--
-- So a SchemaMigration in sync wave -1 holds wave 0 (the application) until the schema change
-- is done, and stops the sync visibly when it fails.
--
-- Argo CD runs this without Lua's string and math libraries (unless useOpenLibs is set): only
-- base functions (tonumber, ipairs, ...) are used. Numbers may arrive as strings, hence tonumber.

local hs = { status = "Progressing", message = "waiting for the controller" }

local status = obj.status
if status == nil then
  return hs
end

local generation = tonumber((obj.metadata or {}).generation)
local observed = tonumber(status.observedGeneration)
if observed == nil then
  return hs
end
if generation ~= nil and observed < generation then
  hs.message = "waiting for the controller: status is of generation " .. tostring(observed)
    .. ", the spec is at generation " .. tostring(generation)
  return hs
end

local phase = status.phase
if phase == nil or phase == "" then
  return hs
end

-- The controller's own message says what is happening ("copying rows: ...", "queued: ...").
local function describe(default)
  local message = status.message
  if message == nil or message == "" then
    return default
  end
  return message
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe("Succeeded")
elseif phase == "Failed" or phase == "Cancelled" then
  hs.status = "Degraded"
  hs.message = describe(phase)
elseif phase == "Postponed" then
  hs.status = "Suspended"
  hs.message = describe("cut-over postponed: annotate ghost/postpone-cut-over=false or set spec.cutOver.postpone to false")
else
  hs.status = "Progressing"
  hs.message = describe(phase)
end
return hs
