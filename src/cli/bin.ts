#!/usr/bin/env node
// The entry of earlier builds, still named by OpenSSH configs that `spuff ssh-config` wrote then: runs bin.cts.
import "./bin.cjs";
