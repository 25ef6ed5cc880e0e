#!/bin/sh
cat "$GREETING_FILE"
