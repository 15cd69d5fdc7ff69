// A PM2 deployment of two Python services and the logpipe shipper, side by side.
//
//   pm2 start examples/pm2/ecosystem.config.js && pm2 save
//
// Paths: PM2 starts the apps from its daemon, and cron/systemd have a bare PATH, so every
// program is named by an absolute path. Adjust the three constants (or set them in the
// environment when you run `pm2 start`): `command -v logpipe` and `command -v python3` in the
// virtualenv print them.
const path = require("path");

const LOGPIPE = process.env.LOGPIPE_BIN || "/opt/logpipe/venv/bin/logpipe";
const PYTHON = process.env.LOGPIPE_PYTHON || "/opt/logpipe/venv/bin/python";
const APPS = process.env.LOGPIPE_EXAMPLES || path.resolve(__dirname, "..");

module.exports = {
  apps: [
    {
      // Two instances: PM2 writes api-out-<pm_id>.log / api-error-<pm_id>.log for each, and
      // logpipe gives every line (logger, print(), tracebacks) that instance's
      // instance_id (NODE_APP_INSTANCE: 0, 1) and pm_id.
      name: "api",
      script: path.join(APPS, "api.py"),
      args: "--count 1000000 --interval 0.5",
      interpreter: PYTHON,
      instances: 2,
      exec_mode: "fork", // PM2's cluster mode is for Node.js apps
    },
    {
      name: "worker",
      script: path.join(APPS, "worker.py"),
      args: "--count 1000000 --interval 1",
      interpreter: PYTHON,
      // PM2's own formats are understood (the date prefix stripped, JSON chunks unwrapped),
      // but with a prefix PM2 drops the text after a chunk's last newline: for apps that
      // print(), prefer log_type "json" or no prefix. logpipe's logger writes whole lines.
      log_type: "json",
    },
    {
      // The shipper: everything in $PM2_HOME/logs to Splunk HEC. Its own out/error files
      // are in that same directory: logpipe recognises them (and those of any PM2 app that
      // runs logpipe) and never reads them.
      name: "logpipe-shipper",
      script: LOGPIPE,
      args: "collect --pm2 --to splunk",
      interpreter: "none",
      // PM2 stops an app with SIGINT and SIGKILLs it kill_timeout ms later (default 1600).
      // logpipe drains on SIGINT: what it read is delivered or spooled before it exits, and
      // checkpoints are saved — give it the time (keep above the collector's drain time).
      kill_timeout: 30000,
      env: {
        LOGPIPE_SPLUNK_URL: process.env.LOGPIPE_SPLUNK_URL || "https://splunk.example.com:8088",
        // the token lives in a file (mode 600), never in this file or on a command line
        LOGPIPE_SPLUNK_TOKEN_FILE: process.env.LOGPIPE_SPLUNK_TOKEN_FILE || "/etc/logpipe/hec-token",
        LOGPIPE_STATE_DIR: process.env.LOGPIPE_STATE_DIR || "/var/lib/logpipe",
      },
    },
  ],
};
