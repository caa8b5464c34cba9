<#
.SYNOPSIS
Installs a per-user scheduled task that starts litebrokerd for one database at logon
and restarts it when it fails; -Uninstall stops and removes it. The Windows counterpart of
scripts/install-service.sh.

.DESCRIPTION
One task per database, named from the database's absolute path
(litebrokerd-<file stem>-<8 hex digits of its SHA-256>), in the task folder
\litebroker\. It runs as the current user, only while that user is logged on (no
password is stored), with no time limit, and is restarted by the Task Scheduler up
to 3 times, one minute apart, if it cannot start. The task runs a small hidden
PowerShell loop that restarts litebrokerd when it exits with a failure (not after a
clean exit 0, a configuration error 2, or 3: another broker already serves the
database), like the systemd unit's Restart=on-failure; the broker's log is
<db>-broker.log next to the database.

Task Scheduler's "End" (and Unregister) terminates the process outright, without
the clean shutdown that a SIGTERM gives on Unix. -Uninstall therefore first asks
the broker to stop with `litebroker shutdown` when litebroker.exe sits next to
litebrokerd.exe, so the WAL is checkpointed and the pipe released.

.PARAMETER Db
The database file (default: data\app.db, or the LITEBROKER_DB environment variable).

.PARAMETER Broker
The litebrokerd.exe to run (default: LITEBROKERD, target\release or target\debug
of this repository, then PATH).

.PARAMETER Print
Only print what would be registered (task, trigger, action, the loop it runs); change nothing.

.PARAMETER Uninstall
Stop the broker of this database, then remove its task.

.PARAMETER BrokerArgs
Extra litebrokerd arguments, e.g. -BrokerArgs '--synchronous','full'.

.EXAMPLE
scripts\install-service.ps1 -Db C:\app\data\app.db

.EXAMPLE
scripts\install-service.ps1 -Db C:\app\data\app.db -Uninstall
#>
[CmdletBinding()]
param(
    [string]$Db = $(if ($env:LITEBROKER_DB) { $env:LITEBROKER_DB } else { 'data\app.db' }),
    [string]$Broker = '',
    [switch]$Print,
    [switch]$Uninstall,
    [string[]]$BrokerArgs = @()
)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$TaskPath = '\litebroker\'

function Get-AbsolutePath([string]$Path) {
    # GetFullPath resolves against the process's directory, which PowerShell does
    # not keep in step with Set-Location: resolve against the current location.
    if (-not [System.IO.Path]::IsPathRooted($Path)) {
        $Path = Join-Path (Get-Location).ProviderPath $Path
    }
    return [System.IO.Path]::GetFullPath($Path)
}

function Find-Broker {
    $repo = Split-Path -Parent $PSScriptRoot
    $candidates = @()
    if ($Broker) {
        $candidates = @($Broker)
    } elseif ($env:LITEBROKERD) {
        $candidates = @($env:LITEBROKERD)
    } else {
        $candidates = @(
            (Join-Path $repo 'target\release\litebrokerd.exe'),
            (Join-Path $repo 'target\debug\litebrokerd.exe')
        )
        $onPath = Get-Command 'litebrokerd.exe' -CommandType Application -ErrorAction SilentlyContinue |
            Select-Object -First 1
        if ($onPath) { $candidates += $onPath.Source }
    }
    foreach ($c in $candidates) {
        if (Test-Path -LiteralPath $c -PathType Leaf) { return (Get-AbsolutePath $c) }
    }
    throw "litebrokerd.exe not found (looked at: $($candidates -join ', ')); build it with 'cargo build --release -p litebroker-server' or pass -Broker PATH"
}

function Get-TaskName([string]$DbPath) {
    $sha = [System.Security.Cryptography.SHA256]::Create()
    try {
        # Windows paths are case-insensitive: hash the lower-cased path so C:\App and
        # c:\app name the same task.
        $bytes = [System.Text.Encoding]::UTF8.GetBytes($DbPath.ToLowerInvariant())
        $hex = -join ($sha.ComputeHash($bytes)[0..3] | ForEach-Object { $_.ToString('x2') })
    } finally {
        $sha.Dispose()
    }
    $stem = [System.IO.Path]::GetFileNameWithoutExtension($DbPath) -replace '[^A-Za-z0-9_-]', '_'
    return "litebrokerd-$stem-$hex"
}

# One command-line argument quoted for CreateProcess / the C runtime's parser.
function ConvertTo-Argument([string]$Arg) {
    if ($Arg -notmatch '[\s"]' -and $Arg.Length -gt 0) { return $Arg }
    $escaped = $Arg -replace '(\\*)"', '$1$1\"' -replace '(\\+)$', '$1$1'
    return '"' + $escaped + '"'
}

# A PowerShell single-quoted string literal.
function ConvertTo-PsLiteral([string]$Text) {
    return "'" + ($Text -replace "'", "''") + "'"
}

$dbPath = Get-AbsolutePath $Db
$taskName = Get-TaskName $dbPath

if ($Uninstall) {
    $task = Get-ScheduledTask -TaskPath $TaskPath -TaskName $taskName -ErrorAction SilentlyContinue
    if (-not $task) {
        Write-Output "no task installed for $dbPath ($TaskPath$taskName)"
        return
    }
    # A clean shutdown first (the loop then ends with exit 0); a litebroker exit code
    # of 3 just means no broker was running.
    $cli = $null
    try { $cli = Join-Path (Split-Path -Parent (Find-Broker)) 'litebroker.exe' } catch { }
    if (-not ($cli -and (Test-Path -LiteralPath $cli -PathType Leaf))) {
        $found = Get-Command 'litebroker.exe' -CommandType Application -ErrorAction SilentlyContinue |
            Select-Object -First 1
        $cli = if ($found) { $found.Source } else { $null }
    }
    if ($cli) {
        & $cli --db $dbPath shutdown 2>$null | Out-Null
    } else {
        Write-Warning "litebroker.exe not found: the broker is ended without a clean shutdown"
    }
    Stop-ScheduledTask -TaskPath $TaskPath -TaskName $taskName -ErrorAction SilentlyContinue
    Unregister-ScheduledTask -TaskPath $TaskPath -TaskName $taskName -Confirm:$false
    Write-Output "removed scheduled task $TaskPath$taskName"
    return
}

$brokerPath = Find-Broker
$arguments = (@('--db', $dbPath) + $BrokerArgs | ForEach-Object { ConvertTo-Argument $_ }) -join ' '
$logPath = "$dbPath-broker.log"
$user = [System.Security.Principal.WindowsIdentity]::GetCurrent().Name

# The task runs this loop in a hidden PowerShell rather than litebrokerd directly:
# a console program started at logon would otherwise show a console window, and
# the loop restarts the broker on failure exactly as the systemd unit does (not
# after a clean exit 0, a configuration error 2, or 3: another broker serves the
# database), which Task Scheduler's own restart setting cannot express.
$template = @'
$ErrorActionPreference = 'Continue'
$exe = __EXE__
$argLine = __ARGS__
$log = __LOG__
while ($true) {
    if (Test-Path -LiteralPath $log) { Move-Item -LiteralPath $log -Destination ($log + '.1') -Force }
    $p = Start-Process -FilePath $exe -ArgumentList $argLine -NoNewWindow -Wait -PassThru -RedirectStandardError $log
    if (@(0, 2, 3) -contains $p.ExitCode) { exit $p.ExitCode }
    Start-Sleep -Seconds 2
}
'@
$loop = $template.Replace('__EXE__', (ConvertTo-PsLiteral $brokerPath))
$loop = $loop.Replace('__ARGS__', (ConvertTo-PsLiteral $arguments))
$loop = $loop.Replace('__LOG__', (ConvertTo-PsLiteral $logPath))
$encoded = [Convert]::ToBase64String([System.Text.Encoding]::Unicode.GetBytes($loop))
$hostArgs = "-NoProfile -NonInteractive -ExecutionPolicy Bypass -WindowStyle Hidden -EncodedCommand $encoded"

if ($Print) {
    Write-Output "Task:      $TaskPath$taskName"
    Write-Output "Trigger:   at logon of $user (interactive, no stored password)"
    Write-Output "Settings:  no time limit; one instance; runs on batteries; restart 3 times, 1 minute apart, if it cannot start"
    Write-Output "Action:    powershell.exe $hostArgs"
    Write-Output "Log:       $logPath (the previous run's in $logPath.1)"
    Write-Output "The action runs, hidden:"
    Write-Output $loop
    return
}

$action = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument $hostArgs `
    -WorkingDirectory (Split-Path -Parent $dbPath)
$trigger = New-ScheduledTaskTrigger -AtLogOn -User $user
$principal = New-ScheduledTaskPrincipal -UserId $user -LogonType Interactive -RunLevel Limited
# RestartCount is a byte in the task schema and RestartInterval at least one minute.
$settings = New-ScheduledTaskSettingsSet `
    -ExecutionTimeLimit ([TimeSpan]::Zero) `
    -RestartCount 3 -RestartInterval (New-TimeSpan -Minutes 1) `
    -MultipleInstances IgnoreNew `
    -AllowStartIfOnBatteries -DontStopIfGoingOnBatteries -StartWhenAvailable
$task = New-ScheduledTask -Action $action -Trigger $trigger -Principal $principal -Settings $settings `
    -Description "litebroker broker for $dbPath (scripts/install-service.ps1)"

New-Item -ItemType Directory -Force -Path (Split-Path -Parent $dbPath) | Out-Null
Register-ScheduledTask -TaskPath $TaskPath -TaskName $taskName -InputObject $task -Force | Out-Null
Start-ScheduledTask -TaskPath $TaskPath -TaskName $taskName
Write-Output "registered and started scheduled task $TaskPath$taskName"
Write-Output "  it starts litebrokerd at every logon of $user and restarts it on failure"
Write-Output "  log: $logPath"
Write-Output "  remove it with: scripts\install-service.ps1 -Db '$dbPath' -Uninstall"
