-- Argo CD health of a ModelCycle (modelcycle.dev/v1alpha1), from its kstatus conditions.
-- Progressing until the operator has observed the current generation; Suspended when
-- spec.suspend is true; Degraded when Stalled=True or Ready=False for a failure;
-- Healthy when Ready=True; otherwise Progressing with what the operator is doing.
-- It looks conditions up by type and never counts them. Lua 5.1 (Argo CD's gopher-lua).
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

-- Ready=False reasons that mean the cycle failed and waits for a new trigger (a fixed
-- spec, the retrain annotation, an alert), rather than work in progress.
local function is_failure(reason)
  if reason == nil then
    return false
  end
  return string.match(reason, "Failed$") ~= nil
    or reason == "InvalidSpec"
    or reason == "ChallengerRejected"
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile the ModelCycle"
  return hs
end
if generation ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(status, "Ready")
local stalled = condition(status, "Stalled")
local reconciling = condition(status, "Reconciling")

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended (spec.suspend): " .. text(ready, "no new cycle starts")
  return hs
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = text(stalled, "The last cycle failed")
  return hs
end
if ready ~= nil and ready.status == "False" and is_failure(ready.reason) then
  hs.status = "Degraded"
  hs.message = text(ready, "The last cycle failed")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  return hs
end
hs.status = "Progressing"
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = text(reconciling, "Reconciling")
else
  hs.message = text(ready, "Reconciling")
end
return hs
