#!/usr/bin/env python3
"""Mints a hoard world token (PASETO v4.public) with a stock PASETO package.
Usage: mint_token.py TOKEN_KEY_FILE WORLD PLAYER [HOURS] [PLAYER_KEY]
TOKEN_KEY_FILE holds a PASERK k4.secret (a server's token.key, or an account
service's key listed in the world's token-keys); WORLD is the world's
fingerprint (hex); PLAYER_KEY, the player's k4.public intent key, is bound."""
import base64, hashlib, json, sys
from datetime import datetime, timedelta, timezone
import pyseto  # pip install pyseto

key_file, world, player = sys.argv[1:4]
hours = int(sys.argv[4]) if len(sys.argv) > 4 else 24
paserk = open(key_file).read().strip()
secret = pyseto.Key.from_paserk(paserk)
# A k4.secret is seed ‖ public key; the token names its key by PASERK id.
public = base64.urlsafe_b64decode(paserk[10:] + "==")[32:]
public_paserk = "k4.public." + base64.urlsafe_b64encode(public).decode().rstrip("=")
kid = "k4.pid." + base64.urlsafe_b64encode(hashlib.blake2b(b"k4.pid." + public_paserk.encode(), digest_size=33).digest()).decode()
exp = (datetime.now(timezone.utc) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
claims = {"sub": player, "aud": world, "exp": exp} | ({"key": sys.argv[5]} if len(sys.argv) > 5 else {})
print(pyseto.encode(secret, json.dumps(claims).encode(), footer=json.dumps({"kid": kid}).encode()).decode())
