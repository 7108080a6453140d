package io.privstage.spark;

import com.ibm.icu.lang.UCharacter;
import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.text.Normalizer;
import java.util.Arrays;
import java.util.Base64;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.apache.spark.sql.api.java.UDF3;

/**
 * Keyed pseudonym: encode(HMAC-SHA-256(key, UTF-8(casefold?(strip(NFC(value)))))[:bits/8]).
 *
 * <p>Arguments: the value (string), the key (binary, from a broadcast relation so that it never
 * appears in a plan) and an options string "fold,bits,encoding" such as "1,128,b64" or "0,256,hex".
 * The Mac is built once per key and reused for every row. Nulls stay null. The definition is the
 * same as privstage's Spark built-in composition and Python's hmac; tests check all three agree.
 */
public final class Pseudonym implements UDF3<String, byte[], String, String> {
  private static final long serialVersionUID = 1L;
  private static final char[] HEX = "0123456789abcdef".toCharArray();

  private transient byte[] cachedKey;
  private transient Mac mac;
  private transient String cachedOptions;
  private transient boolean fold;
  private transient int bytes;
  private transient boolean hex;

  @Override
  public String call(String value, byte[] key, String options) throws GeneralSecurityException {
    if (value == null) {
      return null;
    }
    if (key == null) {
      throw new IllegalArgumentException("privstage pseudonym: no key for this row");
    }
    if (mac == null || !Arrays.equals(key, cachedKey)) {
      mac = Mac.getInstance("HmacSHA256");
      mac.init(new SecretKeySpec(key, "HmacSHA256"));
      cachedKey = key.clone();
    }
    if (!options.equals(cachedOptions)) {
      String[] parts = options.split(",");
      fold = "1".equals(parts[0]);
      bytes = Integer.parseInt(parts[1]) / 8;
      hex = "hex".equals(parts[2]);
      cachedOptions = options;
    }
    byte[] digest = mac.doFinal(normalise(value, fold).getBytes(StandardCharsets.UTF_8));
    if (hex) {
      char[] out = new char[bytes * 2];
      for (int i = 0; i < bytes; i++) {
        out[2 * i] = HEX[(digest[i] >> 4) & 0xF];
        out[2 * i + 1] = HEX[digest[i] & 0xF];
      }
      return new String(out);
    }
    return Base64.getUrlEncoder().withoutPadding().encodeToString(Arrays.copyOf(digest, bytes));
  }

  /** NFC, strip Unicode whitespace as Python's str.strip() does, optional full case folding. */
  static String normalise(String value, boolean fold) {
    boolean ascii = true;
    for (int i = 0; i < value.length(); i++) {
      if (value.charAt(i) >= 0x80) {
        ascii = false;
        break;
      }
    }
    String text = ascii ? value : Normalizer.normalize(value, Normalizer.Form.NFC);
    int start = 0;
    int end = text.length();
    while (start < end) {
      int cp = text.codePointAt(start);
      if (!isPythonWhitespace(cp)) {
        break;
      }
      start += Character.charCount(cp);
    }
    while (end > start) {
      int cp = text.codePointBefore(end);
      if (!isPythonWhitespace(cp)) {
        break;
      }
      end -= Character.charCount(cp);
    }
    text = text.substring(start, end);
    if (!fold) {
      return text;
    }
    return ascii ? asciiLower(text) : UCharacter.foldCase(text, true);
  }

  private static String asciiLower(String text) {
    char[] chars = text.toCharArray();
    for (int i = 0; i < chars.length; i++) {
      char c = chars[i];
      if (c >= 'A' && c <= 'Z') {
        chars[i] = (char) (c + 32);
      }
    }
    return new String(chars);
  }

  /** The code points Python's str.isspace() accepts. */
  static boolean isPythonWhitespace(int cp) {
    if (cp <= 0x20) {
      return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
    }
    switch (cp) {
      case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
        return true;
      default:
        return cp >= 0x2000 && cp <= 0x200A;
    }
  }
}
