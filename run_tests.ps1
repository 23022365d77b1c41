# Create .venv if missing, install requirements.txt and the project, run the whole test suite (PowerShell).
$testArgs = $args
$ErrorActionPreference = "Stop"
Set-Location -Path $PSScriptRoot
$venvDir = Join-Path $PSScriptRoot ".venv"
$venvPython = Join-Path $venvDir "Scripts\python.exe"
$venvItem = Get-Item -LiteralPath $venvDir -Force -ErrorAction SilentlyContinue
if ($venvItem -and -not $venvItem.PSIsContainer) {
    [Console]::Error.WriteLine("error: $venvDir is not a folder (a file is in the way of the project's virtual " +
        "environment): move it away (it is not removed for you) and run this again")
    exit 2
}
if (-not (Test-Path $venvPython)) {
    $py = $null
    foreach ($candidate in @("py -3.11", "python3.11", "python3", "python")) {
        $parts = $candidate.Split(" ")
        $exe = Get-Command $parts[0] -ErrorAction SilentlyContinue
        if ($exe) {
            $extra = @()
            if ($parts.Length -gt 1) { $extra = $parts[1..($parts.Length - 1)] }
            & $exe.Source @extra -c "import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)" 2>$null
            if ($LASTEXITCODE -eq 0) { $py = @($exe.Source) + $extra; break }
        }
    }
    if (-not $py) {
        [Console]::Error.WriteLine("error: Python 3.11 or newer is required and was not found on PATH")
        exit 1
    }
    Write-Host "creating .venv"
    $pyArgs = @()
    if ($py.Length -gt 1) { $pyArgs = $py[1..($py.Length - 1)] }
    & $py[0] @pyArgs -m venv .venv
    if ($LASTEXITCODE -ne 0 -or -not (Test-Path $venvPython)) {
        [Console]::Error.WriteLine("error: could not create .venv with $($py -join ' ') -m venv")
        exit 1
    }
    $stampGone = Join-Path $venvDir ".requirements.sha256"
    if (Test-Path $stampGone) { Remove-Item -LiteralPath $stampGone }   # a recreated .venv installs again
} else {
    & $venvPython -c "import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)" 2>$null
    if ($LASTEXITCODE -ne 0) {
        [Console]::Error.WriteLine("error: .venv holds a Python older than 3.11 (or one that does not run); " +
            "move that folder away (it is not removed for you) and run this again")
        exit 2
    }
}
$stamp = Join-Path $venvDir ".requirements.sha256"
$want = ((Get-FileHash -Algorithm SHA256 requirements.txt).Hash + (Get-FileHash -Algorithm SHA256 pyproject.toml).Hash).ToLower()
if (-not (Test-Path $stamp) -or (Get-Content $stamp) -ne $want) {
    Write-Host "installing requirements.txt and the project (pip install -e .) into .venv"
    & $venvPython -m pip install --disable-pip-version-check -q -r requirements.txt
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    & $venvPython -m pip install --disable-pip-version-check -q --no-deps -e .
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    Set-Content -Path $stamp -Value $want
}
& $venvPython -m pytest -rA @testArgs
exit $LASTEXITCODE
