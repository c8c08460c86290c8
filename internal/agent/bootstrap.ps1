# vmrescue bootstrap, run by Run Command: fetch the agent, check its SHA-256, run it. Every value
# arrives as a Run Command parameter (or, failing that, the same-named environment variable).
param(
    [string]$AgentUrl = $env:AgentUrl,
    [string]$AgentSha256 = $env:AgentSha256,
    [string]$AgentRequest = $env:AgentRequest
)
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
if ($AgentSha256 -notmatch '^[0-9A-Fa-f]{64}$') { throw 'AgentSha256 must be 64 hex digits' }
if (-not $AgentUrl.StartsWith('https://')) { throw 'AgentUrl must be an https URL' }
[Net.ServicePointManager]::SecurityProtocol = [Net.SecurityProtocolType]::Tls12
$dir = Join-Path $env:ProgramData 'vmrescue'
New-Item -ItemType Directory -Force -Path $dir | Out-Null
$exe = Join-Path $dir ('handler-' + $AgentSha256.ToLowerInvariant() + '.exe')
if (-not (Test-Path -LiteralPath $exe) -or (Get-FileHash -LiteralPath $exe -Algorithm SHA256).Hash -ne $AgentSha256) {
    $tmp = $exe + '.download'
    Invoke-WebRequest -UseBasicParsing -Uri $AgentUrl -OutFile $tmp
    $got = (Get-FileHash -LiteralPath $tmp -Algorithm SHA256).Hash
    if ($got -ne $AgentSha256) { Remove-Item -LiteralPath $tmp -Force; throw ('agent SHA-256 mismatch: got ' + $got) }
    Move-Item -LiteralPath $tmp -Destination $exe -Force
}
$env:VMRESCUE_AGENT_REQUEST = $AgentRequest
& $exe agent --request-env
exit $LASTEXITCODE
